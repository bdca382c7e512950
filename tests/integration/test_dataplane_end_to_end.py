"""Issue 15 end to end: uploaded inputs reach cloud workers through their target's store, and come back.

One real ``fusionctl serve`` (SQLite) with four targets on the emulators the
tests use: ``aws`` (moto EC2, its store an S3 bucket in moto), ``azure`` (the
ARM fake, its store a Blob container in Azurite), ``onprem`` (Kubernetes on
kmock, sharing the AWS target's bucket) and ``local`` (private). Nothing runs
a container here, so the test plays the machine: it reads the worker spec
where the worker would (the instance's user data, the VM's custom data, the
Job's Secret) and runs the real worker (``fusionctl worker run --spec``) with
the credentials a worker there has (the emulators' keys), then downloads
the output through ``GET /v1/tasks/{id}/output``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import cv2
import httpx
import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient
from kubernetes import client

from controlplane.cli.client import ApiClient
from controlplane.cli.tasks.upload import upload_resumable
from providers.bootstrap import LABEL_ATTEMPT
from providers.kubernetes import SECRET_KEY
from tests.fakes.azure_arm import FakeAzureArm
from tests.support.aws import moto_server
from tests.support.azurite import Azurite
from tests.support.fleet import ManagedIdentityEndpoint, spec_from_cloud_init
from tests.support.kmock_cluster import api_client, kmock_cluster, write_kubeconfig
from tests.support.loopback import free_port
from tests.support.media import make_clip, probe_facts
from tests.support.no_metadata import NO_METADATA_ENV
from tests.support.serve_process import ServedPlane, served

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REGION = "us-east-1"
BUCKET = "fp-shared"
CONTAINER = "fp-work"
NAMESPACE = "fusionplane"
GROUP = "rg-fusionplane"
SUBSCRIPTION = "00000000-0000-0000-0000-00000000f00d"
ARM_TOKEN = "fake-arm-token"
SEGMENT_FRAMES = 8
CLIP_FRAMES = 48


def _policy(azurite: Azurite) -> dict[str, Any]:
    subnet = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-net/providers/Microsoft.Network"
        "/virtualNetworks/vnet-workers/subnets/workers"
    )
    shared = {"uri": f"s3://{BUCKET}/work/"}  # aws and onprem share it: a video moves between them
    blob = {"uri": f"az://{azurite.account}/{CONTAINER}/work/", "endpoint_url": azurite.endpoint}
    return {
        # one spot preemption opens the offer's breaker: the video's next attempt goes to the private cluster
        "thresholds": {"breaker_min_attempts": 1, "retry_backoff_seconds": 3, "retry_backoff_max_seconds": 10},
        "targets": [
            {"name": "local", "provider": "local", "private": True, "settings": {"slots": 1}},
            {
                "name": "aws",
                "provider": "aws",
                "private": False,
                "regions": [REGION],
                "instance_types": ["g4dn.xlarge"],
                "settings": {"image_id": "ami-0fusionplane0e2e"},
                "storage": shared,
            },
            {
                "name": "azure",
                "provider": "azure",
                "private": False,
                "regions": ["eastus"],
                "instance_types": ["Standard_NC4as_T4_v3"],
                "settings": {
                    "subscription_id": SUBSCRIPTION,
                    "resource_group": GROUP,
                    "subnet_id": subnet,
                    "image": "Canonical:ubuntu-24_04-lts:server:latest",
                    "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests fusionplane@e2e",
                },
                "storage": blob,
            },
            {
                "name": "onprem",
                "provider": "kubernetes",
                "private": True,
                "settings": {"namespace": NAMESPACE, "gpus": 0},
                "storage": shared,
            },
        ],
        "rules": [
            {"name": "private", "match": {"data_sensitivity": "private"}, "targets": ["aws", "azure", "local"]},
            {"name": "lane-aws", "match": {"labels": {"lane": "aws"}}, "targets": ["aws"]},
            {"name": "lane-azure", "match": {"labels": {"lane": "azure"}}, "targets": ["azure"]},
            {"name": "lane-onprem", "match": {"labels": {"lane": "onprem"}}, "targets": ["onprem"]},
            {"name": "lane-video", "match": {"labels": {"lane": "video"}}, "targets": ["aws", "onprem"]},
        ],
    }


@dataclass
class World:
    plane: ServedPlane
    api: ApiClient
    moto_url: str
    azurite: Azurite
    cluster_url: str
    arm: FakeAzureArm
    aws_env: dict[str, str]

    def s3(self) -> Any:
        return boto3.client("s3", endpoint_url=self.moto_url, region_name=REGION, **_KEYS)

    def blobs(self) -> Any:
        return BlobServiceClient.from_connection_string(self.azurite.connection_string)


_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


#: more reservations than one DescribeInstances page of moto's (100 when MaxResults is not sent)
EARLIER_RESERVATIONS = 101


def _earlier_tests_instances(moto_url: str) -> None:
    """Instances that are not this module's, as the tests before it leave them.

    moto keeps its EC2 state per process, not per server: every
    ``ThreadedMotoServer`` of the session answers from the same backends,
    so whatever earlier modules launched in this region is listed here too
    (in CI once more than a page of it, and the lookup that read only the
    first page timed out). A page's worth up front makes that the case in
    every run, alone or in the suite.
    """
    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name=REGION, **_KEYS)
    for _ in range(EARLIER_RESERVATIONS):
        ec2.run_instances(ImageId="ami-0earlier0tests", InstanceType="t3.micro", MinCount=1, MaxCount=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("dataplane-e2e")
    with contextlib.ExitStack() as stack:
        moto_url = stack.enter_context(moto_server())
        _earlier_tests_instances(moto_url)
        cluster = stack.enter_context(kmock_cluster())
        arm = stack.enter_context(FakeAzureArm(cert_dir=workdir / "arm-tls", token=ARM_TOKEN, provision_polls=1))
        identity = stack.enter_context(ManagedIdentityEndpoint(ARM_TOKEN))
        aws_env = {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        }
        boto3.client("s3", endpoint_url=moto_url, region_name=REGION, **_KEYS).create_bucket(Bucket=BUCKET)
        with contextlib.suppress(Exception):  # one Azurite serves the whole session
            BlobServiceClient.from_connection_string(azurite.connection_string).create_container(CONTAINER)
        policy = workdir / "policy.json"
        policy.write_text(json.dumps(_policy(azurite)))
        port = free_port()
        env = {
            **aws_env,
            **NO_METADATA_ENV,
            "FUSIONPLANE_POLICY_FILE": str(policy),
            "FUSIONPLANE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "FUSIONPLANE_WORKER_IMAGE": "registry.example/fusionplane-worker:e2e",
            "FUSIONPLANE_WORKER_GPUS": "0",
            "FUSIONPLANE_AWS_ENDPOINT_URL": moto_url,
            "FUSIONPLANE_AZURE_ARM_URL": arm.url,
            "REQUESTS_CA_BUNDLE": str(arm.ca_path),
            **identity.env(),
            "FUSIONPLANE_AZURE_PRICES_URL": f"http://127.0.0.1:{free_port()}",
            "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
            "KUBECONFIG": str(write_kubeconfig(workdir / "kubeconfig.json", {"e2e": cluster.url})),
            "FUSIONPLANE_SIGNALS_OFF": "kubernetes",
            "FUSIONPLANE_SIGNALS_BREAKER_INTERVAL_S": "1",
            "FUSIONPLANE_SIGNALS_BREAKER_JITTER_S": "0",
        }
        serving = served(workdir, insecure_dev=True, port=port, args=("--allow-loopback-callbacks",), **env)  # type: ignore[arg-type]
        plane = stack.enter_context(serving)
        api = ApiClient(plane.url, None)
        stack.callback(api.close)
        yield World(plane, api, moto_url, azurite, cluster.url, arm, aws_env)


# -- playing the machine: where each backend's worker finds its spec -------------------------------------


def _aws_spec(world: World, attempt_id: str) -> dict[str, Any] | None:
    ec2 = boto3.client("ec2", endpoint_url=world.moto_url, region_name=REGION, **_KEYS)
    # the attempt's tag, every page: EC2 (and moto) answer a page of 100 reservations at a time
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": f"tag:{LABEL_ATTEMPT}", "Values": [attempt_id]}]
    )
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                raw = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
                value = raw.get("UserData", {}).get("Value")
                spec = spec_from_cloud_init(base64.b64decode(value).decode()) if value else None
                if spec and spec["attempt_id"] == attempt_id:
                    return spec
    return None


def _azure_spec(world: World, attempt_id: str) -> dict[str, Any] | None:
    for vm in world.arm.vms():
        spec = spec_from_cloud_init(base64.b64decode(vm.custom_data).decode()) if vm.custom_data else None
        if spec and spec["attempt_id"] == attempt_id:
            return spec
    return None


def _kubernetes_spec(world: World, attempt_id: str) -> dict[str, Any] | None:
    core = client.CoreV1Api(api_client(world.cluster_url))
    for secret in core.list_namespaced_secret(NAMESPACE).items:
        data = (secret.data or {}).get(SECRET_KEY)
        spec = json.loads(base64.b64decode(data)) if data else None
        if spec and spec["attempt_id"] == attempt_id:
            return dict(spec)
    return None


_SPEC_OF: dict[str, Callable[[World, str], dict[str, Any] | None]] = {
    "aws": _aws_spec,
    "azure": _azure_spec,
    "kubernetes": _kubernetes_spec,
}


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = None
        # a pooled connection the server closed as idle just as the poll reused it (uvicorn's keep-alive
        # timer, late on a loaded machine): the poll is a GET, so the next round asks again
        with contextlib.suppress(httpx.RemoteProtocolError):
            value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _receipt(world: World, task_id: str) -> dict[str, Any]:
    """The placement receipt (``fusionctl explain``): the plans and the attempts."""
    answer = world.api.send("GET", f"/v1/tasks/{task_id}/decision")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _task(world: World, task_id: str) -> dict[str, Any]:
    answer = world.api.send("GET", f"/v1/tasks/{task_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _launched(world: World, task_id: str, provider: str, *, after: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attempt after ``after`` on ``provider`` once launched, and its spec as the worker there reads it."""

    def attempt() -> dict[str, Any] | None:
        receipt = _receipt(world, task_id)
        found = [a for a in receipt["attempts"] if a["provider"] == provider and a["number"] > after]
        return found[-1] if found and found[-1].get("backend_ref") else None

    found = _wait(f"{task_id} launched on {provider}\n{world.plane.output()[-3000:]}", attempt)
    spec = _wait(f"{provider} spec of {found['id']}", lambda: _SPEC_OF[provider](world, found["id"]))
    return found, spec


def _worker(world: World, spec: dict[str, Any], workdir: Path) -> subprocess.Popen[str]:
    """The real worker, with the credentials a worker on that backend has (the emulators' keys)."""
    path = workdir / f"spec-{spec['attempt_id']}.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, **world.aws_env, **NO_METADATA_ENV}
    env["AZURE_STORAGE_CONNECTION_STRING"] = world.azurite.connection_string
    command = [sys.executable, "-m", "controlplane.cli", "worker", "run", "--spec", str(path)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout_s: float = 180) -> str:
    _out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, err[-3000:]
    return err


def _succeeded(world: World, task_id: str) -> dict[str, Any]:
    return dict(_wait(f"{task_id} succeeded", lambda: _final(world, task_id)))


def _final(world: World, task_id: str) -> dict[str, Any] | None:
    task = _task(world, task_id)
    assert task["state"] not in ("failed", "cancelled"), task
    return task if task["state"] == "succeeded" else None


def _download(world: World, task_id: str) -> bytes:
    answer = world.api.send("GET", f"/v1/tasks/{task_id}/output")
    assert answer.status_code == 307, answer.text
    link = answer.headers["location"]
    assert link.startswith(("http://127.0.0.1", "https://127.0.0.1")), "a link to the emulator's store"
    got = httpx.get(link, timeout=30)
    assert got.status_code == 200, got.text
    return got.content


def _submit(world: World, workdir: Path, source: Path, target: Path, **extra: Any) -> tuple[str, dict[str, str]]:
    uris = {
        field: upload_resumable(world.api, path, name=path.name, chunk_bytes=1 << 18)
        for field, path in (("source", source), ("target", target))
    }
    answer = world.api.send("POST", "/v1/tasks", json={**uris, **extra})
    assert answer.status_code in (200, 201, 202), answer.text
    return str(answer.json()["id"]), uris


# -- the tests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lane", "provider", "root"),
    [
        ("aws", "aws", f"s3://{BUCKET}/work/dev/"),
        ("azure", "azure", f"az://devstoreaccount1/{CONTAINER}/work/dev/"),
        ("onprem", "kubernetes", f"s3://{BUCKET}/work/dev/"),
    ],
)
def test_an_uploaded_task_runs_from_its_target_s_store_and_downloads_through_the_api(
    world: World,
    tmp_path: Path,
    source_face_path: Path,
    astronaut_path: Path,
    astronaut: np.ndarray,
    lane: str,
    provider: str,
    root: str,
) -> None:
    task_id, uploaded = _submit(world, tmp_path, source_face_path, astronaut_path, labels={"lane": lane})
    _attempt, spec = _launched(world, task_id, provider)
    # the spec names only the target's store: the control plane's disk is not where a cloud worker reads
    for field in ("source", "target", "output"):
        assert spec[field].startswith(f"{root}{task_id}/"), (field, spec[field])
        assert spec[field] != uploaded.get(field)
    assert spec["source"].endswith("/inputs/source-" + source_face_path.name)
    _finish(_worker(world, spec, tmp_path))
    assert _succeeded(world, task_id)["target"] == lane
    image = cv2.imdecode(np.frombuffer(_download(world, task_id), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.shape == astronaut.shape
    assert not np.array_equal(image, astronaut), "the face was swapped"


def test_a_video_preempted_on_aws_resumes_on_kubernetes_from_the_shared_segments(
    world: World, tmp_path: Path, source_face_path: Path, astronaut: np.ndarray
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", astronaut, frames=CLIP_FRAMES, fps=24)
    task_id, _uploaded = _submit(
        world,
        tmp_path,
        source_face_path,
        clip,
        labels={"lane": "video"},
        options={"segment_frames": SEGMENT_FRAMES, "preset": "ultrafast"},
    )
    first, spec = _launched(world, task_id, "aws")
    checkpoint = spec["checkpoint"]
    assert checkpoint == f"s3://{BUCKET}/work/dev/{task_id}/checkpoint/"
    prefix = checkpoint.removeprefix(f"s3://{BUCKET}/")
    s3 = world.s3()

    def segments() -> list[str]:
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        return [item["Key"] for item in listed if item["Key"].endswith(".ts")]

    proc = _worker(world, spec, tmp_path)
    try:
        _wait("a committed segment", segments, timeout_s=120)
        proc.terminate()  # SIGTERM: the spot interruption notice
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 75, err[-3000:]
    committed = len(segments())
    assert 1 <= committed < CLIP_FRAMES // SEGMENT_FRAMES

    _second, moved = _launched(world, task_id, "kubernetes", after=first["number"])
    assert moved["checkpoint"] == checkpoint, "the same segments, in the store both targets share"
    err = _finish(_worker(world, moved, tmp_path))
    summary = next(json.loads(line) for line in err.splitlines() if '"attempt_succeeded"' in line)
    assert summary["segments_skipped"] == committed, "finished segments are not recomputed"
    _succeeded(world, task_id)
    result = tmp_path / "result.mp4"
    result.write_bytes(_download(world, task_id))
    assert probe_facts(result).frames == CLIP_FRAMES


def test_a_private_task_s_bytes_never_reach_a_cloud_store(world: World, tmp_path: Path, astronaut: np.ndarray) -> None:
    secret = tmp_path / "private-face.png"
    marked = astronaut.copy()
    marked[:8, :8] = (1, 2, 3)  # bytes of its own, to look for
    cv2.imwrite(str(secret), marked)
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    task_id, _uris = _submit(world, tmp_path, secret, secret, data_sensitivity="private")
    decided = _wait("a placement receipt", lambda: _receipt(world, task_id)["decisions"])[0]
    rejected = {r["target"]: r["code"] for r in decided["rejections"]}
    assert rejected["aws"] == rejected["azure"] == "private_data"
    assert decided["candidates"][0]["target"] == "local"
    s3 = world.s3()
    for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() != digest, item["Key"]
        assert task_id not in item["Key"]
    container = world.blobs().get_container_client(CONTAINER)
    for blob in container.list_blobs():
        assert hashlib.sha256(container.download_blob(blob.name).readall()).hexdigest() != digest, blob.name
        assert task_id not in blob.name
