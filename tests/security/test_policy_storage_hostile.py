"""Hostile store URIs in a policy: climbing out, smuggling a query, credentials in the endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.policy import PolicyError, parse_policy


def _parse(storage: dict[str, Any], provider: str = "aws") -> None:
    parse_policy({"targets": [{"name": "t", "provider": provider, "private": False, "storage": storage}]})


@pytest.mark.parametrize(
    "uri",
    [
        "s3://fp-work/../other-bucket/",
        "s3://fp-work/a/../../b/",
        "s3://fp-work/./x/",
        "s3://fp-work//x/",
        "s3://fp-work/x?versionId=1",
        "s3://fp-work/x#frag",
        "s3://fp-work/x%2F..%2F/",
        "s3://fp-work/x\\..\\y/",
        "s3://fp-work/x\n/",
        "s3://fp-work/\x00/",
        "s3://fp..work/",
        "s3://" + "a" * 64 + "/",
        "s3://fp-work/" + "x" * 1100,
    ],
)
def test_a_store_uri_that_could_escape_its_prefix_is_refused(uri: str) -> None:
    with pytest.raises(PolicyError) as caught:
        _parse({"uri": uri})
    assert caught.value.path == "targets[0].storage.uri"


@pytest.mark.parametrize(
    "root", ["/srv/../etc/", "/srv/./x/", "/srv//x/", "relative/out/", "file://relative/", "/srv/out?x=1"]
)
def test_a_local_root_must_be_a_plain_absolute_path(root: str) -> None:
    with pytest.raises(PolicyError) as caught:
        _parse({"uri": root}, provider="local")
    assert caught.value.path == "targets[0].storage.uri"


@pytest.mark.parametrize("mount", ["/mnt/../etc", "/mnt/./x", "/mnt//x", "mnt", "/mnt/a b"])
def test_a_pvc_mount_path_must_be_a_plain_absolute_path(mount: str) -> None:
    with pytest.raises(PolicyError) as caught:
        _parse({"uri": "pvc://claim/x/", "mount_path": mount}, provider="kubernetes")
    assert caught.value.path == "targets[0].storage.mount_path"


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://user:secret@minio:9000",
        "https://key@minio",
        "http://minio:9000/?X-Amz-Credential=abc",
        "http://minio:9000/#x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://minio:99999",
        "http://minio :9000",
    ],
)
def test_an_endpoint_with_credentials_a_query_or_another_scheme_is_refused(endpoint: str) -> None:
    with pytest.raises(PolicyError) as caught:
        _parse({"uri": "s3://fp-work/x/", "endpoint_url": endpoint})
    assert caught.value.path == "targets[0].storage.endpoint_url"
    assert "secret" not in str(caught.value)
