"""``fusionctl models fill`` (issue 18 item 3): stand-in models from moto S3 and a loopback HTTPS mirror.

The mirror holds a certificate for a name only; the tests resolve that name to
127.0.0.1 and allow it as an internal host, as an operator with a mirror inside
the network would. S3 is moto in server mode, reached through AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from controlplane.cli.main import cli
from faceswap.errors import EXIT_BAD_INPUT, EXIT_MODEL
from faceswap.fetcher import FetchRules
from faceswap.modelfill import fill_models
from faceswap.models import ModelStore
from faceswap.netguard import AllowedHosts
from tests.support.aws import isolate_aws_environment, moto_server
from tests.support.model_mirror import MIRROR_HOST, Mirror, fill_manifest, https_mirror, standin_files
from tests.support.storage import fixed_resolver


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_bucket(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Any, str]:
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    client = boto3.client("s3", endpoint_url=moto_url)
    bucket = f"fp-models-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


@pytest.fixture
def standins(tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    return standin_files(tmp_path)


def _rules(mirror: Mirror, trust: Any) -> FetchRules:
    return FetchRules(
        allowed_internal=AllowedHosts.parse([f"{MIRROR_HOST}:{mirror.port}"]),
        resolver=fixed_resolver({MIRROR_HOST: ["127.0.0.1"]}),
        tls_verify=trust,
    )


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.name.startswith("."))


def test_fills_from_https_and_s3_and_the_worker_verifies_what_was_filled(
    tmp_path: Path, s3_bucket: tuple[Any, str], standins: tuple[list[dict[str, Any]], dict[str, bytes]]
) -> None:
    client, bucket = s3_bucket
    entries, blobs = standins
    swapper, recognizer = entries
    client.put_object(Bucket=bucket, Key=f"onnx/{recognizer['file']}", Body=blobs[recognizer["file"]])
    with https_mirror(tmp_path, {f"/{swapper['file']}": blobs[swapper["file"]]}) as (mirror, trust, _ca):
        manifest = fill_manifest(
            tmp_path / "fill.json",
            entries,
            {
                swapper["name"]: mirror.url(swapper["file"]),
                recognizer["name"]: f"s3://{bucket}/onnx/{recognizer['file']}",
            },
        )
        dest = tmp_path / "cache"
        results = fill_models(manifest, dest, rules=_rules(mirror, trust))
    assert [(r.name, r.action, r.error) for r in results] == [
        (swapper["name"], "downloaded", None),
        (recognizer["name"], "downloaded", None),
    ]
    assert (dest / swapper["file"]).read_bytes() == blobs[swapper["file"]]
    assert _leftovers(dest) == []
    store = ModelStore(dest)
    assert store.verified_path(swapper["name"], role="swapper") == dest / swapper["file"]
    assert store.verified_path(recognizer["name"], role="recognizer") == dest / recognizer["file"]


def test_a_model_already_present_and_verified_is_not_downloaded_again_and_a_corrupt_one_is(
    tmp_path: Path, standins: tuple[list[dict[str, Any]], dict[str, bytes]]
) -> None:
    entries, blobs = standins
    files = {f"/{e['file']}": blobs[e["file"]] for e in entries}
    with https_mirror(tmp_path, files) as (mirror, trust, _ca):
        manifest = fill_manifest(tmp_path / "fill.json", entries, {e["name"]: mirror.url(e["file"]) for e in entries})
        dest = tmp_path / "cache"
        fill_models(manifest, dest, rules=_rules(mirror, trust))
        assert len(mirror.requests) == 2
        (dest / entries[1]["file"]).write_bytes(b"truncated")
        again = fill_models(manifest, dest, rules=_rules(mirror, trust))
    assert [r.action for r in again] == ["present", "downloaded"]
    assert mirror.requests[2:] == [f"/{entries[1]['file']}"]
    assert (dest / entries[1]["file"]).read_bytes() == blobs[entries[1]["file"]]


def test_a_checksum_mismatch_leaves_nothing_behind_and_no_manifest(
    tmp_path: Path, standins: tuple[list[dict[str, Any]], dict[str, bytes]]
) -> None:
    entries, blobs = standins
    swapper = entries[0]
    # the mirror serves a different (valid ONNX) file under the swapper's name
    files = {f"/{swapper['file']}": blobs[entries[1]["file"]]}
    with https_mirror(tmp_path, files) as (mirror, trust, _ca):
        manifest = fill_manifest(tmp_path / "fill.json", [swapper], {swapper["name"]: mirror.url(swapper["file"])})
        dest = tmp_path / "cache"
        results = fill_models(manifest, dest, rules=_rules(mirror, trust))
    assert results[0].action == "failed"
    assert "checksum mismatch" in str(results[0].error)
    assert sorted(p.name for p in dest.iterdir()) == []


def test_a_missing_object_fails_that_model_only_and_the_manifest_stays_as_it_was(
    tmp_path: Path, s3_bucket: tuple[Any, str], standins: tuple[list[dict[str, Any]], dict[str, bytes]]
) -> None:
    client, bucket = s3_bucket
    entries, blobs = standins
    client.put_object(Bucket=bucket, Key=entries[0]["file"], Body=blobs[entries[0]["file"]])
    manifest = fill_manifest(
        tmp_path / "fill.json", entries, {e["name"]: f"s3://{bucket}/{e['file']}" for e in entries}
    )
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "manifest.json").write_text('{"models": []}')
    results = fill_models(manifest, dest)
    assert [r.action for r in results] == ["downloaded", "failed"]
    assert (dest / "manifest.json").read_text() == '{"models": []}'
    assert sorted(p.name for p in dest.iterdir()) == ["inswapper_128.onnx", "manifest.json"]


def test_the_cli_fills_over_https_with_an_operator_ca_and_reports_json(
    tmp_path: Path, standins: tuple[list[dict[str, Any]], dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    entries, blobs = standins
    files = {f"/{e['file']}": blobs[e["file"]] for e in entries}
    # the CLI resolves through the system: the mirror's certificate names 127.0.0.1's "localhost" too
    with https_mirror(tmp_path, files, dns_names=("localhost",)) as (mirror, _trust, ca):
        sources = {e["name"]: f"https://localhost:{mirror.port}/{e['file']}" for e in entries}
        manifest = fill_manifest(tmp_path / "fill.json", entries, sources)
        dest = tmp_path / "cache"
        args = ["models", "fill", "--manifest", str(manifest), "--dest", str(dest), "--ca-bundle", str(ca)]
        args += ["-o", "json"]
        refused = CliRunner().invoke(cli, args)
        allowed = CliRunner().invoke(cli, [*args, "--allow-internal-host", f"localhost:{mirror.port}"])
    assert refused.exit_code == EXIT_BAD_INPUT, refused.output
    assert "internal name" in refused.output
    assert allowed.exit_code == 0, allowed.output
    report = json.loads(allowed.stdout)
    assert [m["action"] for m in report["models"]] == ["downloaded", "downloaded"]
    assert json.loads((dest / "manifest.json").read_text())["models"][0]["source"] == sources[entries[0]["name"]]


def test_the_cli_exits_69_on_a_bad_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "fill.json"
    manifest.write_text(json.dumps({"models": [{"name": "x"}]}))
    result = CliRunner().invoke(cli, ["models", "fill", "--manifest", str(manifest), "--dest", str(tmp_path / "c")])
    assert result.exit_code == EXIT_MODEL
    assert "models[0].role" in result.output
