from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from controlplane.api.remote_uris import RemoteRules
from controlplane.api.schemas import FieldError, TaskCreate, check_input_uri, check_output_uri
from faceswap.access import Access

BASE: dict[str, Any] = {"source": "s3://faces/a.png", "target": "s3://media/clip.mp4"}


def _first_error(body: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as info:
        TaskCreate.model_validate(body)
    error = info.value.errors()[0]
    return tuple(error["loc"]), error["msg"]


def test_a_minimal_body_gets_the_documented_defaults() -> None:
    task = TaskCreate.model_validate(BASE)
    assert task.priority == "normal"
    assert task.data_sensitivity == "internal"
    assert task.options.swapper == "classic"
    assert task.labels == {}


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"priority": "asap"}, ("priority",)),
        ({"data_sensitivity": "secret"}, ("data_sensitivity",)),
        ({"kind": "audio"}, ("kind",)),
        ({"deadline_seconds": -1}, ("deadline_seconds",)),
        ({"deadline_seconds": 0}, ("deadline_seconds",)),
        ({"deadline_seconds": 10**9}, ("deadline_seconds",)),
        ({"budget_usd": -0.01}, ("budget_usd",)),
        ({"labels": {"team": "a\x07b"}}, ("labels",)),
        ({"labels": {"Bad Key": "x"}}, ("labels", "Bad Key", "[key]")),
        ({"labels": {f"k{i}": "v" for i in range(40)}}, ("labels",)),
        ({"labels": {"team": "x" * 300}}, ("labels", "team")),
        ({"source": "s3://b/a\nb.png"}, ("source",)),
        ({"source": ""}, ("source",)),
        ({"target": "x" * 5000}, ("target",)),
        ({"options": {"swapper": "magic"}}, ("options", "swapper")),
        ({"surprise": 1}, ("surprise",)),
    ],
)
def test_bad_values_name_their_field(change: dict[str, Any], loc: tuple[Any, ...]) -> None:
    assert _first_error({**BASE, **change})[0] == loc


def test_missing_fields_are_named() -> None:
    assert _first_error({"target": "s3://m/c.mp4"})[0] == ("source",)


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    inputs = tmp_path / "inputs"
    (inputs / "acme").mkdir(parents=True)
    (inputs / "acme" / "face.png").write_bytes(b"png")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    os.symlink(secret, inputs / "acme" / "escape.png")
    return inputs, secret


def test_local_inputs_inside_the_tenant_folder_are_accepted_and_resolved(roots: tuple[Path, Path]) -> None:
    inputs, _ = roots
    mine = inputs / "acme" / "face.png"
    assert check_input_uri(str(mine), field="source", input_roots=[inputs], tenant="acme") == str(
        Path(os.path.realpath(mine))
    )
    assert check_input_uri(f"file://{mine}", field="source", input_roots=[inputs], tenant="acme").endswith("face.png")
    with pytest.raises(FieldError):  # not without a tenant, and not another tenant's
        check_input_uri(str(mine), field="source", input_roots=[inputs])
    with pytest.raises(FieldError):
        check_input_uri(str(mine), field="source", input_roots=[inputs], tenant="globex")


@pytest.mark.parametrize(
    "uri",
    [
        "{inputs}/acme/../../secret.png",
        "{inputs}/acme/escape.png",
        "{inputs}/face.png",
        "/etc/passwd",
        "relative/face.png",
        "ftp://h/x.png",
        "s3://bucket",
    ],
)
def test_inputs_outside_the_roots_or_with_bad_schemes_are_refused(roots: tuple[Path, Path], uri: str) -> None:
    inputs, _ = roots
    with pytest.raises(FieldError) as info:
        check_input_uri(uri.format(inputs=inputs), field="target", input_roots=[inputs], tenant="acme")
    assert info.value.field == "target"


GRANT = RemoteRules(access=Access.parse(s3_read=["s3://b/"], s3_write=["s3://b/out/"], web_hosts=["*"]))


def test_remote_inputs_inside_the_grant_pass_through() -> None:
    for uri in ("s3://b/k.png", "https://cdn.example/a.png?sig=1"):
        assert check_input_uri(uri, field="source", input_roots=[], remote=GRANT) == uri


def test_s3_needs_a_grant_and_public_web_hosts_do_not() -> None:
    assert check_input_uri("https://cdn.example/a.png", field="source", input_roots=[]) == "https://cdn.example/a.png"
    with pytest.raises(FieldError, match="may not read") as info:
        check_input_uri("s3://b/k.png", field="source", input_roots=[])
    assert info.value.field == "source"


def test_outputs_stay_under_the_output_root(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    root.mkdir()
    assert check_output_uri("acme/out.png", field="output", output_root=root, tenant="acme") == str(
        root / "acme" / "out.png"
    )
    assert (
        check_output_uri("s3://b/out/o.png", field="output", output_root=root, tenant="acme", remote=GRANT)
        == "s3://b/out/o.png"
    )
    with pytest.raises(FieldError, match="may not write"):
        check_output_uri("s3://b/o.png", field="output", output_root=root, tenant="acme", remote=GRANT)
    (root / "acme").mkdir()
    (root / "acme" / "done.png").write_bytes(b"finished")
    for bad in ("../elsewhere.png", "/etc/cron.d/x", "https://x/y.png", "globex/out.png", "out.png", "acme/done.png"):
        with pytest.raises(FieldError):
            check_output_uri(bad, field="output", output_root=root, tenant="acme")
