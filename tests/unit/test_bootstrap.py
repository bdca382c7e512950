"""The shared worker bootstrap: names, id-only tags (Azure's spelling), the image, cloud-init, and the shared rules."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from controlplane.domain import InvalidSpec
from controlplane.domain.worker_spec import parse_worker_spec
from providers.base import BackendState
from providers.bootstrap import (
    AZURE_TAG_ATTEMPT,
    AZURE_TAG_OWNER,
    AZURE_TAG_TASK,
    LABEL_ATTEMPT,
    LABEL_OWNER,
    LABEL_TASK,
    MODELS_MANIFEST_PATH,
    SELF_SHUTDOWN_GRACE_S,
    SELF_SHUTDOWN_REASON,
    SELF_SHUTDOWN_WAITING,
    SPEC_PATH,
    SelfShutdownGrace,
    WorkerImage,
    access_denied,
    azure_tag_key,
    azure_tags,
    cloud_init,
    resource_name,
    resource_tags,
    spec_json,
    worker_image,
)

DOCUMENT = {
    "version": 1,
    "task_id": "tsk_1",
    "attempt_id": "att_01HXYZ",
    "source": "s3://in/a.png",
    "target": "s3://in/b.mp4",
    "output": "s3://out/c.mp4",
    "callback": {"url": "https://cp/v1/attempts/att_01HXYZ", "token": "att_SECRET-token", "heartbeat_seconds": 5},
}
SPEC = parse_worker_spec(DOCUMENT)


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
    assert json.loads(base64.b64decode(spec_file["content"])) == DOCUMENT
    assert base64.b64decode(spec_file["content"]).decode() == spec_json(SPEC)
    script = base64.b64decode(script_file["content"]).decode()
    assert "docker run --rm --name fusionplane-att_01HXYZ --gpus all" in script
    assert f"-v {SPEC_PATH}:{SPEC_PATH}:ro" in script
    assert "-e LOG_LEVEL=info" in script
    assert script.rstrip().endswith("shutdown -h now")
    assert document["runcmd"] == [["/usr/local/sbin/fusionplane-worker"]]
    cpu = cloud_init(SPEC, WorkerImage(image="w:cpu", gpus=False), attempt_id="att_01HXYZ")
    assert "--gpus" not in base64.b64decode(yaml.safe_load(cpu)["write_files"][1]["content"]).decode()


def test_a_task_deadline_schedules_a_power_off_before_the_worker_starts() -> None:
    image = WorkerImage(image="w:1")
    script_of = lambda text: base64.b64decode(yaml.safe_load(text)["write_files"][1]["content"]).decode()  # noqa: E731
    lines = script_of(cloud_init(SPEC, image, attempt_id="att_01HXYZ", deadline_seconds=120)).splitlines()
    timer = lines.index("shutdown -P +2")
    assert timer < next(i for i, line in enumerate(lines) if line.startswith("docker run"))
    assert "shutdown -P +1\n" in script_of(cloud_init(SPEC, image, attempt_id="att_01HXYZ", deadline_seconds=1))
    assert "shutdown -P +3\n" in script_of(cloud_init(SPEC, image, attempt_id="att_01HXYZ", deadline_seconds=121))
    assert "shutdown -P" not in script_of(cloud_init(SPEC, image, attempt_id="att_01HXYZ"))


def test_a_models_manifest_makes_the_vm_fill_its_model_cache_before_the_worker_starts() -> None:
    manifest = json.dumps({"models": [{"name": "inswapper_128", "source": "s3://models/inswapper_128.onnx"}]})
    image = WorkerImage(image="registry.example/w:1", models_manifest=manifest)
    document = yaml.safe_load(cloud_init(SPEC, image, attempt_id="att_01HXYZ"))
    files = {entry["path"]: entry for entry in document["write_files"]}
    written = files[MODELS_MANIFEST_PATH]
    assert written["permissions"] == "0644"
    assert base64.b64decode(written["content"]).decode() == manifest
    lines = base64.b64decode(files["/usr/local/sbin/fusionplane-worker"]["content"]).decode().splitlines()
    [fill] = [i for i, line in enumerate(lines) if "models fill" in line]
    [worker] = [i for i, line in enumerate(lines) if line.startswith("docker run --rm --name")]
    assert lines.index("chown 1000:1000 /var/lib/fusionplane/models") < fill < worker
    # the worker's image, the cache writable for the fill only, and a failed fill still runs the worker
    assert lines[fill].startswith("docker run --rm --entrypoint fusionctl -v /var/lib/fusionplane/models:/models ")
    assert "registry.example/w:1 models fill" in lines[fill]
    assert f"--manifest {MODELS_MANIFEST_PATH} --dest /models ||" in lines[fill]
    assert "-v /var/lib/fusionplane/models:/models:ro" in lines[worker]


def test_without_a_models_manifest_the_bootstrap_fills_nothing() -> None:
    document = yaml.safe_load(cloud_init(SPEC, WorkerImage(image="w:1"), attempt_id="att_01HXYZ"))
    assert [entry["path"] for entry in document["write_files"]] == [SPEC_PATH, "/usr/local/sbin/fusionplane-worker"]
    assert "models fill" not in base64.b64decode(document["write_files"][1]["content"]).decode()


def test_azure_tag_keys_replace_what_azure_refuses_and_only_for_azure() -> None:
    assert azure_tag_key(LABEL_TASK) == AZURE_TAG_TASK == "fusionplane.io_task-id"
    assert azure_tag_key(LABEL_ATTEMPT) == AZURE_TAG_ATTEMPT == "fusionplane.io_attempt-id"
    assert azure_tag_key(LABEL_OWNER) == AZURE_TAG_OWNER == "fusionplane.io_owner"
    assert azure_tag_key("a<b>c%d&e\\f?g/h") == "a_b_c_d_e_f_g_h"
    ids = {"task_id": "tsk_1", "attempt_id": "att_01HXYZ", "owner": "cp-eu"}
    assert resource_tags(**ids, for_azure=True) == {
        "fusionplane.io_task-id": "tsk_1",
        "fusionplane.io_attempt-id": "att_01HXYZ",
        "fusionplane.io_owner": "cp-eu",
    }
    # Kubernetes labels and EC2 tags keep the '/' form (selectors and IAM conditions use it)
    assert resource_tags(**ids) == {LABEL_TASK: "tsk_1", LABEL_ATTEMPT: "att_01HXYZ", LABEL_OWNER: "cp-eu"}
    assert azure_tags({"team/name": "x"}) == {"team_name": "x"}


def test_the_worker_image_is_the_default_unless_the_target_names_one() -> None:
    default = WorkerImage(image="w:default", gpus=False, env={"A": "1"}, stop_timeout_s=30)
    assert worker_image(default, None, target="t") is default
    pinned = worker_image(default, " w:pinned ", target="t")
    assert pinned == WorkerImage(image="w:pinned", gpus=False, env={"A": "1"}, stop_timeout_s=30)
    assert worker_image(None, "w:only", target="t") == WorkerImage(image="w:only")
    with pytest.raises(InvalidSpec, match=r"target t: settings\.worker_image is required") as missing:
        worker_image(None, None, target="t")
    assert missing.value.target == "t"
    assert not missing.value.retryable
    for bad in ("", "  ", 3, ["w:1"]):
        with pytest.raises(InvalidSpec, match=r"settings\.worker_image must be an image reference"):
            worker_image(default, bad, target="t")


def test_a_self_shutdown_is_running_for_the_grace_then_lost() -> None:
    now = [100.0]
    grace = SelfShutdownGrace(monotonic=lambda: now[0])
    assert grace.grace_s == SELF_SHUTDOWN_GRACE_S == 60.0
    first = grace.status("i-1", "instance i-1 stopped")
    assert first.state is BackendState.RUNNING
    assert first.reason == f"instance i-1 stopped: {SELF_SHUTDOWN_WAITING}"
    now[0] += SELF_SHUTDOWN_GRACE_S - 0.5
    assert grace.status("i-1", "x").state is BackendState.RUNNING
    assert grace.status("i-2", "x").state is BackendState.RUNNING  # each resource has its own grace
    now[0] += 1.0
    lost = grace.status("i-1", "instance i-1 stopped")
    assert lost.state is BackendState.LOST
    assert lost.reason == f"instance i-1 stopped: {SELF_SHUTDOWN_REASON}"
    assert lost.exit_code is None
    assert grace.status("i-2", "x").state is BackendState.RUNNING
    assert SelfShutdownGrace(0.0).status("i-3", "x").state is BackendState.LOST
    with pytest.raises(ValueError, match="grace"):
        SelfShutdownGrace(-1.0)


def test_self_shutdown_sightings_are_bounded() -> None:
    now = [0.0]
    grace = SelfShutdownGrace(monotonic=lambda: now[0], memory=3)
    for n in range(5):
        grace.status(f"i-{n}", "x")
    now[0] += SELF_SHUTDOWN_GRACE_S
    # i-0 was forgotten (the oldest beyond the bound): a new sighting starts a new grace
    assert grace.status("i-0", "x").state is BackendState.RUNNING
    assert grace.status("i-4", "x").state is BackendState.LOST


def test_access_denied_is_terminal_and_says_it_is_the_targets_setup() -> None:
    error = access_denied(
        "RunInstances aws/us-east-1a/g5.xlarge",
        "UnauthorizedOperation: You are not authorized",
        target="aws-spot",
        check="the role's IAM policy",
        history=("aws/us-east-1a/g4dn.xlarge: InsufficientInstanceCapacity",),
    )
    assert isinstance(error, InvalidSpec)
    assert not error.retryable
    assert error.target == "aws-spot"
    assert error.history == ("aws/us-east-1a/g4dn.xlarge: InsufficientInstanceCapacity",)
    assert error.message == (
        "RunInstances aws/us-east-1a/g5.xlarge: access denied: UnauthorizedOperation: You are not authorized. "
        "This is the target's configuration or permissions, not the task: check the role's IAM policy"
    )
