"""Workers get least privilege: a local worker never sees the control plane's secrets, and no worker
anywhere is handed more than its own attempt's callback token.

The local provider is built the way ``fusionctl serve`` builds it (settings
from the environment), with cloud and control-plane secrets in that
environment; the worker it starts writes its own ``os.environ`` to a file,
which is what ``/proc/<worker>/environ`` would show.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from controlplane.cli.main import cli
from controlplane.config import CloudSettings, Settings
from controlplane.domain import Target, Task, TaskKind, TaskSpec, TaskState
from controlplane.domain.worker_spec import WorkerSpec
from controlplane.runtime.providers import cloud_providers
from controlplane.scheduler.workerspec import render_worker_spec
from providers.base import BackendState, LaunchRequest
from providers.bootstrap import cloud_init
from providers.local import LocalProvider
from providers.local_env import DEFAULT_MODEL_DIR, DEFAULT_TRT_CACHE
from tests.contract.provider_contract import candidate_for, launch_request
from tests.support.kmock_cluster import JOBS, SECRETS, KmockCluster, write_kubeconfig

pytestmark = pytest.mark.timeout(60)

#: what serve's environment holds and no worker may see (distinct values, so a leak is found by value too)
SECRETS_OF_THE_CONTROL_PLANE = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-of-the-control-plane",
    "AWS_ACCESS_KEY_ID": "AKIACONTROLPLANE",
    "AWS_SESSION_TOKEN": "aws-session-of-the-control-plane",
    "AZURE_CLIENT_SECRET": "azure-secret-of-the-control-plane",
    "AZURE_CLIENT_ID": "azure-client-of-the-control-plane",
    "FUSIONPLANE_DATABASE_URL": "postgresql://fp:db-password@127.0.0.1:9/fp",
    "CONSUL_HTTP_TOKEN": "consul-token-of-the-control-plane",
}
#: writes the worker's whole environment to env.json in its cwd (the attempt folder), then exits 0
DUMP_ENV = [sys.executable, "-c", "import json, os; open('env.json', 'w').write(json.dumps(dict(os.environ)))"]


@pytest.fixture
def serve_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The control plane's environment: every secret set, HOME its own; returns that home."""
    for name, value in SECRETS_OF_THE_CONTROL_PLANE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    # the operator's own spelling (still "disabled" to boto3: tests never let an SDK reach a metadata
    # address), to tell it from the worker's default: passed on only when named
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "TRUE")
    monkeypatch.delenv("FUSIONPLANE_LOCAL_WORKER_ENV", raising=False)
    home = tmp_path / "operator-home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("[default]\naws_secret_access_key = from-the-file\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FUSIONPLANE_MODEL_DIR", raising=False)
    monkeypatch.delenv("FUSIONPLANE_TRT_CACHE", raising=False)
    return home


def run_worker(tmp_path: Path, attempt_id: str = "att-env") -> tuple[dict[str, str], Path]:
    """Start a worker as serve would and return the environment it saw, and its attempt folder."""
    settings = Settings.from_env()
    provider = LocalProvider(tmp_path / "state", 1, DUMP_ENV, pass_env=settings.local_worker_env)
    provider.launch(launch_request(attempt_id))
    deadline = time.monotonic() + 30
    while not provider.status(attempt_id).state.is_final:
        assert time.monotonic() < deadline, provider.logs(attempt_id).read_text()
        time.sleep(0.02)
    assert provider.status(attempt_id).state is BackendState.SUCCEEDED, provider.logs(attempt_id).read_text()
    folder = provider.state_dir / attempt_id
    env: dict[str, str] = json.loads((folder / "env.json").read_text())
    return env, folder


def test_a_local_worker_never_inherits_the_control_planes_secrets(serve_env: Path, tmp_path: Path) -> None:
    env, folder = run_worker(tmp_path)
    leaked = sorted(name for name in SECRETS_OF_THE_CONTROL_PLANE if name in env)
    assert leaked == [], f"the worker sees {leaked}"
    for value in SECRETS_OF_THE_CONTROL_PLANE.values():
        assert value not in json.dumps(env)
    assert "AWS_ENDPOINT_URL" not in env  # storage settings only when the operator names them
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"  # boto3 never asks 169.254.169.254
    # its own home: the operator's ~/.aws/credentials is not where any SDK looks
    assert env["HOME"] == str(folder)
    assert not (Path(env["HOME"]) / ".aws").exists()
    assert env["FUSIONPLANE_WORKER_SPEC"] == str(folder / "spec.json")
    assert env["PYTHONUNBUFFERED"] == "1"
    # the caches stay where the control plane's user keeps them (not an empty folder per attempt)
    assert env["FUSIONPLANE_MODEL_DIR"] == str(serve_env / DEFAULT_MODEL_DIR.removeprefix("~/"))
    assert env["FUSIONPLANE_TRT_CACHE"] == str(serve_env / DEFAULT_TRT_CACHE.removeprefix("~/"))
    allowed = {
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HOME",
        "PYTHONUNBUFFERED",
        "AWS_EC2_METADATA_DISABLED",
        "FUSIONPLANE_WORKER_SPEC",
        "FUSIONPLANE_MODEL_DIR",
        "FUSIONPLANE_TRT_CACHE",
        "FUSIONPLANE_FFMPEG",
        "FUSIONPLANE_FFPROBE",
        "FUSIONPLANE_STOP_GRACE_S",
        "FUSIONPLANE_CUDNN_ALGO_SEARCH",
    }
    # sh and Python add a few of their own (PWD, SHLVL, LC_CTYPE on a C locale)
    assert set(env) - allowed <= {"PWD", "SHLVL", "OLDPWD", "LC_CTYPE", "_"}, sorted(set(env) - allowed)


def test_storage_credentials_reach_the_worker_only_when_the_operator_names_them(
    serve_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY"
    monkeypatch.setenv("FUSIONPLANE_LOCAL_WORKER_ENV", names)
    env, _ = run_worker(tmp_path)
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert env["AWS_ACCESS_KEY_ID"] == "AKIACONTROLPLANE"
    assert env["AWS_SECRET_ACCESS_KEY"] == "aws-secret-of-the-control-plane"
    for name in ("AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET", "FUSIONPLANE_DATABASE_URL", "CONSUL_HTTP_TOKEN"):
        assert name not in env
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    # the operator may set the metadata switch himself (an instance role), by naming it
    monkeypatch.setenv("FUSIONPLANE_LOCAL_WORKER_ENV", "AWS_EC2_METADATA_DISABLED")
    env, _ = run_worker(tmp_path, "att-imds")
    assert env["AWS_EC2_METADATA_DISABLED"] == "TRUE"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("FUSIONPLANE_DATABASE_URL", "control plane's own secret"),
        ("AWS_ENDPOINT_URL,CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN is the control plane's own secret"),
        ("AWS ENDPOINT", "not an environment variable name"),
        ("AWS_ENDPOINT_URL;rm", "not an environment variable name"),
    ],
)
def test_serve_refuses_a_pass_through_list_that_names_a_control_plane_secret_or_nonsense(
    value: str, words: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FUSIONPLANE_LOCAL_WORKER_ENV", value)
    monkeypatch.setenv("FUSIONPLANE_VAR_DIR", str(tmp_path / "var"))
    result = CliRunner().invoke(cli, ["serve", "--port", "1"])
    assert result.exit_code == 2, result.output
    assert "FUSIONPLANE_LOCAL_WORKER_ENV" in result.output
    assert words in result.output
    assert not (tmp_path / "var").exists()  # refused before anything was created
    with pytest.raises(ValueError, match="control plane's own secret"):
        LocalProvider(tmp_path / "state", 1, DUMP_ENV, pass_env=["CONSUL_HTTP_TOKEN"])


def test_the_worker_defaults_for_its_caches_are_the_ones_the_provider_resolves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from faceswap.models import default_model_dir
    from faceswap.runtime import ExecutionConfig

    monkeypatch.delenv("FUSIONPLANE_MODEL_DIR", raising=False)
    monkeypatch.delenv("FUSIONPLANE_TRT_CACHE", raising=False)
    home = Path("~").expanduser()
    assert default_model_dir() == home / DEFAULT_MODEL_DIR.removeprefix("~/")
    assert ExecutionConfig().trt_cache_root == home / DEFAULT_TRT_CACHE.removeprefix("~/")


def test_the_worker_never_loads_azure_identity() -> None:
    """docs/security.md says the worker has no Azure credential chain (no IMDS token requests): keep it true."""
    code = (
        "import sys, controlplane.cli.worker, controlplane.worker.agent, faceswap.uris; "
        "print(sorted(m for m in sys.modules if m.startswith('azure')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


# -- the clouds: the spec and the bootstrap carry the attempt's token and nothing of the control plane --


def _task() -> Task:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.VIDEO,
        source_uri="s3://faces/a.png",
        target_uri="s3://media/b.mp4",
        output_uri="s3://out/b.mp4",
        deadline_seconds=900,
    )
    return Task(id="tsk_cloud", spec=spec, state=TaskState.LAUNCHING, created_at=now, updated_at=now)


def _request(target: Target, spec: WorkerSpec) -> LaunchRequest:
    return LaunchRequest(
        attempt_id="att_cloud",
        task_id="tsk_cloud",
        candidate=candidate_for(target),
        worker_spec=spec,
        deadline_seconds=900,
    )


def test_cloud_workers_get_their_attempt_token_and_no_control_plane_secret(
    serve_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSIONPLANE_WORKER_IMAGE", "registry.example/fusionplane-worker:1")
    token = "att_the-one-callback-token"
    spec = render_worker_spec(
        task=_task(), attempt_id="att_cloud", token=token, callback_base="https://cp.example", checkpoint_root=None
    )
    assert json.dumps(spec.wire_document()).count(token) == 1
    assert set(spec.wire_document()["callback"]) <= {"url", "token", "heartbeat_seconds", "wait_for_go"}
    with KmockCluster() as cluster:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"kmock": cluster.url})
        targets = [
            Target(
                name="k8s",
                provider="kubernetes",
                private=True,
                settings={"namespace": "fp", "kubeconfig": str(kubeconfig), "context": "kmock"},
            ),
            Target(name="spot", provider="aws", private=False, regions=("us-east-1",), instance_types=("g5.xlarge",)),
            Target(name="az", provider="azure", private=False, regions=("eastus",), instance_types=("NC4as_T4_v3",)),
        ]
        providers = cloud_providers(lambda: targets, clouds=CloudSettings.from_env())  # as serve, from this environment
        providers["kubernetes"].launch(_request(targets[0], spec))
        objects = [*cluster.objects(JOBS), *cluster.objects(SECRETS)]
    assert len(objects) == 2
    sent = [json.dumps(objects)]
    sent += [base64.b64decode(value).decode() for obj in objects for value in obj.get("data", {}).values()]
    # EC2 and Azure send exactly this as user data / custom data, with the image the provider holds
    for name in ("aws", "azure"):
        image = providers[name].image  # type: ignore[attr-defined]
        assert dict(image.env) == {}
        user_data = cloud_init(spec, image, attempt_id="att_cloud")
        sent += [
            user_data,
            *(base64.b64decode(f["content"]).decode() for f in yaml.safe_load(user_data)["write_files"]),
        ]
    everything = "\n".join(sent)
    assert token in everything  # the check reads the decoded documents
    for name, value in SECRETS_OF_THE_CONTROL_PLANE.items():
        assert value not in everything, f"{name} reached a cloud worker"
