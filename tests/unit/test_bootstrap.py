"""The shared worker bootstrap: deterministic names, id-only tags, and cloud-init that keeps the token in one file."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from providers.bootstrap import SPEC_PATH, WorkerImage, cloud_init, resource_name, resource_tags, spec_json

SPEC = {
    "version": 1,
    "task_id": "tsk_1",
    "attempt_id": "att_01HXYZ",
    "source": "s3://in/a.png",
    "target": "s3://in/b.mp4",
    "output": "s3://out/c.mp4",
    "callback": {"url": "https://cp/v1/attempts/att_01HXYZ", "token": "att_SECRET-token", "heartbeat_seconds": 5},
}


def test_names_are_deterministic_and_dns_safe() -> None:
    assert resource_name("fp", "att_01HXYZ") == resource_name("fp", "att_01HXYZ") == "fp-att-01hxyz"
    long = resource_name("fp", "att_" + "x" * 100)
    assert len(long) == 63
    assert not long.endswith("-")
    with pytest.raises(ValueError, match="resource name"):
        resource_name("9", "att")


def test_tags_hold_ids_only() -> None:
    tags = resource_tags(task_id="tsk_1", attempt_id="att_01HXYZ", owner="cp-eu")
    assert tags == {
        "fusionplane.io/task-id": "tsk_1",
        "fusionplane.io/attempt-id": "att_01HXYZ",
        "fusionplane.io/owner": "cp-eu",
    }


def test_cloud_init_writes_the_spec_0600_and_runs_the_image_once() -> None:
    image = WorkerImage(image="registry.example/fusionplane-worker:0.1.0-gpu", env={"LOG_LEVEL": "info"})
    text = cloud_init(SPEC, image, attempt_id="att_01HXYZ")
    assert text.startswith("#cloud-config\n")
    assert "att_SECRET-token" not in text  # only base64 inside write_files, never a command line
    document = yaml.safe_load(text)
    spec_file, script_file = document["write_files"]
    assert spec_file["path"] == SPEC_PATH
    assert spec_file["permissions"] == "0600"
    assert json.loads(base64.b64decode(spec_file["content"])) == SPEC
    assert base64.b64decode(spec_file["content"]).decode() == spec_json(SPEC)
    script = base64.b64decode(script_file["content"]).decode()
    assert "docker run --rm --name fusionplane-att_01HXYZ --gpus all" in script
    assert f"-v {SPEC_PATH}:{SPEC_PATH}:ro" in script
    assert "-e LOG_LEVEL=info" in script
    assert script.rstrip().endswith("shutdown -h now")
    assert document["runcmd"] == [["/usr/local/sbin/fusionplane-worker"]]
    cpu = cloud_init(SPEC, WorkerImage(image="w:cpu", gpus=False), attempt_id="att_01HXYZ")
    assert "--gpus" not in base64.b64decode(yaml.safe_load(cpu)["write_files"][1]["content"]).decode()
