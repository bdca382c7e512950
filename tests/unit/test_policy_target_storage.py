"""A target's ``storage`` in the policy: parsed, normalised, and checked against its provider."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.domain.target_storage import StorageKind, TargetStorage
from controlplane.policy import PolicyError, parse_policy
from tests.conftest import REPO

SCHEMA = REPO / "policies" / "schema.json"


def _policy(provider: str, storage: Any) -> dict[str, Any]:
    return {
        "targets": [
            {"name": "here", "provider": "local", "private": True},
            {"name": "there", "provider": provider, "private": False, "storage": storage},
        ]
    }


def _storage(provider: str, storage: Any) -> TargetStorage | None:
    return parse_policy(_policy(provider, storage)).targets[1].storage


@pytest.mark.parametrize(
    ("provider", "storage", "expected"),
    [
        ("aws", {"uri": "s3://fp-work/aws"}, TargetStorage(kind=StorageKind.S3, root="s3://fp-work/aws/")),
        ("aws", {"uri": "s3://fp-work"}, TargetStorage(kind=StorageKind.S3, root="s3://fp-work/")),
        (
            "kubernetes",
            {"uri": "s3://fp-work/k8s/", "endpoint_url": "http://minio.fp.svc:9000/"},
            TargetStorage(kind=StorageKind.S3, root="s3://fp-work/k8s/", endpoint_url="http://minio.fp.svc:9000"),
        ),
        (
            "azure",
            {"uri": "az://fpacct/work/azure", "endpoint_url": "http://127.0.0.1:10000/devstoreaccount1"},
            TargetStorage(
                kind=StorageKind.AZURE_BLOB,
                root="az://fpacct/work/azure/",
                endpoint_url="http://127.0.0.1:10000/devstoreaccount1",
            ),
        ),
        (
            "kubernetes",
            {"uri": "pvc://fp-work/tasks", "mount_path": "/mnt/work/"},
            TargetStorage(kind=StorageKind.PVC, root="pvc://fp-work/tasks/", mount_path="/mnt/work"),
        ),
        ("local", {"uri": "/srv/fp/out"}, TargetStorage(kind=StorageKind.LOCAL, root="/srv/fp/out/")),
        ("local", {"uri": "file:///srv/fp/out/"}, TargetStorage(kind=StorageKind.LOCAL, root="/srv/fp/out/")),
        ("local", {"uri": "s3://fp-work/local/"}, TargetStorage(kind=StorageKind.S3, root="s3://fp-work/local/")),
    ],
)
def test_a_store_that_fits_its_provider_is_parsed_with_its_root_ending_in_a_slash(
    provider: str, storage: dict[str, Any], expected: TargetStorage
) -> None:
    assert _storage(provider, storage) == expected


def test_a_target_without_storage_has_none() -> None:
    policy = parse_policy({"targets": [{"name": "aws", "provider": "aws", "private": False}]})
    assert policy.targets[0].storage is None


@pytest.mark.parametrize(
    ("provider", "storage", "path", "words"),
    [
        ("azure", {"uri": "s3://fp-work/"}, "uri", "does not fit provider azure"),
        ("aws", {"uri": "az://fpacct/work/"}, "uri", "does not fit provider aws"),
        ("aws", {"uri": "pvc://claim/x/", "mount_path": "/mnt"}, "uri", "does not fit provider aws"),
        ("local", {"uri": "pvc://claim/x/", "mount_path": "/mnt"}, "uri", "does not fit provider local"),
        ("aws", {"uri": "/srv/out/"}, "uri", "does not fit provider aws"),
        ("kubernetes", {"uri": "/srv/out/"}, "uri", "does not fit provider kubernetes"),
        ("kubernetes", {"uri": "s3://fp-work/"}, "endpoint_url", "is required"),
        ("kubernetes", {"uri": "pvc://claim/x/"}, "mount_path", "is required"),
        ("kubernetes", {"uri": "pvc://claim/x/", "mount_path": "mnt/work"}, "mount_path", "absolute"),
        ("kubernetes", {"uri": "pvc://claim/x/", "mount_path": "/"}, "mount_path", "must not be /"),
        ("aws", {"uri": "s3://fp-work/", "mount_path": "/mnt"}, "mount_path", "only applies to pvc"),
        ("local", {"uri": "/srv/out/", "endpoint_url": "http://x"}, "endpoint_url", "only applies to s3 and az"),
        ("aws", {"endpoint_url": "http://x"}, "uri", "is required"),
        ("aws", {"uri": "s3://fp-work/", "region": "x"}, "region", "unknown field"),
        ("aws", "s3://fp-work/", "", "must be an object"),
        ("aws", {"uri": "gs://fp-work/"}, "uri", "must be s3://"),
        ("aws", {"uri": "S3://fp-work/"}, "uri", "must be s3://"),
        ("aws", {"uri": "s3://Fp_Work/"}, "uri", "not a valid S3 bucket"),
        ("aws", {"uri": "s3://ab/"}, "uri", "not a valid S3 bucket"),
        ("aws", {"uri": "s3://192.168.1.1/"}, "uri", "not a valid S3 bucket"),
        ("azure", {"uri": "az://fpacct/"}, "uri", "needs a valid container"),
        ("azure", {"uri": "az://fpacct/Work/"}, "uri", "needs a valid container"),
        ("azure", {"uri": "az://fp-acct/work/"}, "uri", "not a valid storage account"),
        ("kubernetes", {"uri": "pvc://Claim/x/", "mount_path": "/mnt"}, "uri", "PersistentVolumeClaim"),
        ("aws", {"uri": "s3://fp-work/a b/"}, "uri", "no spaces"),
        ("aws", {"uri": 3}, "uri", "non-empty string"),
        ("aws", {"uri": "s3://fp-work/x", "endpoint_url": "ftp://minio"}, "endpoint_url", "http:// or https://"),
        ("aws", {"uri": "s3://fp-work/x", "endpoint_url": "http://"}, "endpoint_url", "must name a host"),
        ("aws", {"uri": "s3://fp-work/x", "endpoint_url": 9000}, "endpoint_url", "http(s) URL"),
    ],
)
def test_a_bad_store_is_refused_naming_its_field(provider: str, storage: Any, path: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        _storage(provider, storage)
    assert caught.value.path == ("targets[1].storage" + (f".{path}" if path else ""))
    assert words in caught.value.message


def test_the_schema_accepts_every_kind_and_refuses_an_unknown_field() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for provider, storage in [
        ("aws", {"uri": "s3://fp-work/aws/"}),
        ("azure", {"uri": "az://fpacct/work/", "endpoint_url": "http://127.0.0.1:10000/devstoreaccount1"}),
        ("kubernetes", {"uri": "pvc://fp-work/tasks/", "mount_path": "/mnt/work"}),
        ("local", {"uri": "/srv/fp/out/"}),
    ]:
        validator.validate(_policy(provider, storage))
    for bad in ({"uri": "s3://fp-work/", "query": 1}, {"uri": "s3://fp-work/../x/"}, {"uri": "gs://x/"}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(_policy("aws", bad))
