"""``fusionctl submit|tasks|explain`` in-process against a real uvicorn on loopback with SQLite.

No scheduler runs here: decisions, attempts and state changes are written
straight through the Store, the way the scheduler and the workers would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner, Result

from controlplane.api.app import create_app
from controlplane.api.auth import TokenRegistry, create_token, hash_token
from controlplane.cli.tasks import COMMANDS
from controlplane.cli.tasks import follow as follow_module
from controlplane.config import Settings
from controlplane.domain import (
    AttemptState,
    PlacementPlan,
    Rejection,
    SignalSample,
    SignalSnapshot,
    Task,
    TaskState,
)
from controlplane.policy import parse_policy, plan
from controlplane.store import PlannedLaunch, Store, make_engine, upgrade
from tests.support.asgi_server import free_port, serving
from tests.support.storage import offline_host_resolver, write_storage

TASK_KEYS = {
    "id",
    "tenant",
    "kind",
    "state",
    "reason",
    "queue_reason",
    "queued_since",
    "target",
    "source_uri",
    "target_uri",
    "output_uri",
    "priority",
    "data_sensitivity",
    "deadline_seconds",
    "budget_usd",
    "cost",
    "options",
    "labels",
    "created_at",
    "updated_at",
}
ATTEMPT_KEYS = {
    "id",
    "task_id",
    "number",
    "target",
    "provider",
    "region",
    "instance_type",
    "state",
    "reason",
    "exit_code",
    "backend_ref",
    "hedge_group",
    "created_at",
    "updated_at",
    "last_heartbeat_at",
    "progress",
}
PLAN_KEYS = {
    "task_id",
    "policy_version",
    "decided_at",
    "candidates",
    "rejections",
    "trace",
    "signals_used",
    "replan_by",
    "format",
}
CANDIDATE_KEYS = {
    "target",
    "provider",
    "private",
    "region",
    "instance_type",
    "max_price_usd_h",
    "expected_usd_h",
    "expected_usd_per_task",
    "completion_chance",
    "history_launches",
    "market",
    "hedge_group",
    "breaker_probe",
    "reasons",
}
POLICY_VERSION = "4f9c2a7be01d" + "0" * 52
#: this module's commands under a group of their own (main.py registers COMMANDS on the real one)
FUSIONCTL = click.Group("fusionctl", commands=COMMANDS)


@dataclass
class Plane:
    url: str
    store: Store
    input_root: Path
    tokens: dict[str, str]
    log_files: dict[str, Path] = field(default_factory=dict)

    def run(self, args: Sequence[str], *, as_: str = "acme", url: str | None = None) -> Result:
        env = {"FUSIONPLANE_URL": url or self.url, "FUSIONPLANE_TOKEN": self.tokens[as_]}
        return CliRunner().invoke(FUSIONCTL, list(args), env=env, catch_exceptions=False)

    def submit_json(self, *extra: str, as_: str = "acme") -> dict[str, Any]:
        result = self.run(
            ["submit", "--source", "s3://faces/a.png", "--target", "s3://media/b.png", "-o", "json", *extra], as_=as_
        )
        assert result.exit_code == 0, result.output
        task: dict[str, Any] = json.loads(result.stdout)
        return task


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    root = tmp_path_factory.mktemp("plane")
    (root / "inputs").mkdir()
    tokens_file = root / "tokens.json"
    tokens = {
        "acme": create_token(tokens_file, tenant="acme", role="submitter"),
        "globex": create_token(tokens_file, tenant="globex", role="submitter"),
        "lister": create_token(tokens_file, tenant="lister", role="submitter"),
        "ops": create_token(tokens_file, tenant="ops", role="operator"),
    }
    # the buckets these tests name, granted to every tenant here (deny by default otherwise)
    grant = {"s3_read": ["s3://faces/", "s3://media/", "s3://f/", "s3://m/"], "web_hosts": ["*"]}
    storage_file = write_storage(root / "storage.json", {name: grant for name in tokens})
    settings = Settings(
        var_dir=root,
        input_roots=(root / "inputs",),
        output_root=root / "outputs",
        insecure_dev=False,
        tokens_file=tokens_file,
        storage_file=storage_file,
    )
    engine = make_engine(f"sqlite:///{root / 'store.db'}")
    upgrade(engine=engine)
    store = Store(engine)
    log_files: dict[str, Path] = {}
    asgi_app, _ = create_app(
        settings=settings,
        store=store,
        tokens=TokenRegistry.load(tokens_file),
        attempt_logs=log_files.get,
        resolve_host=offline_host_resolver,
    )
    try:
        with serving(asgi_app) as url:
            yield Plane(url=url, store=store, input_root=root / "inputs", tokens=tokens, log_files=log_files)
    finally:
        engine.dispose()


def _start(store: Store, task_id: str, *, target: str = "local", provider: str = "local") -> str:
    """planned -> attempt -> launching -> running, as the scheduler and the worker would; returns the attempt id."""
    store.transition_task(task_id, wanted=TaskState.PLANNED, actor="test")
    attempt = store.create_attempt(task_id=task_id, target=target, provider=provider, token_sha256=hash_token(task_id))
    store.transition_task(task_id, wanted=TaskState.LAUNCHING, actor="test", target=target)
    store.transition_attempt(attempt.id, wanted=AttemptState.RUNNING, actor="worker")
    store.transition_task(task_id, wanted=TaskState.RUNNING, actor="worker")
    return attempt.id


def _finish_later(
    store: Store, task_id: str, attempt_id: str, *, succeed: bool, delay_s: float = 0.3
) -> threading.Thread:
    def finish() -> None:
        time.sleep(delay_s)
        store.record_heartbeat(attempt_id, progress={"frames": 10, "total": 10, "fps": 20.0, "eta_s": 0})
        if succeed:
            store.transition_attempt(attempt_id, wanted=AttemptState.SUCCEEDED, actor="worker", exit_code=0)
            store.transition_task(task_id, wanted=TaskState.SUCCEEDED, actor="worker")
        else:
            store.transition_attempt(attempt_id, wanted=AttemptState.FAILED, actor="worker", exit_code=65, reason="x")
            store.transition_task(task_id, wanted=TaskState.FAILED, actor="worker", reason="bad_input: no face")

    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- submit


def test_submit_uploads_a_local_file(plane: Plane, tmp_path: Path) -> None:
    face = tmp_path / "my face.png"
    face.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really, but bytes all the same" * 1000)
    result = plane.run(["submit", "--source", str(face), "--target", "s3://media/group.png"])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "STATE", "LOCATION"]
    task_id, state, location = row.split()
    assert state == "queued"
    assert location == f"{plane.url}/v1/tasks/{task_id}"
    stored = plane.store.get_task(task_id)
    source = Path(stored.spec.source_uri)
    assert plane.input_root.resolve() in source.parents
    assert source.name == "my_face.png"
    assert source.read_bytes() == face.read_bytes()
    assert stored.spec.target_uri == "s3://media/group.png"


def _uploads(plane: Plane) -> list[Path]:
    return sorted(plane.input_root.rglob("upl_*"))


def test_submit_resolves_a_relative_path_from_the_current_folder(
    plane: Plane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shots").mkdir()
    (tmp_path / "shots" / "me.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"my face" * 100)
    monkeypatch.chdir(tmp_path)
    result = plane.run(["submit", "--source", "shots/me.png", "--target", "s3://media/group.png", "-o", "json"])
    assert result.exit_code == 0, result.output
    stored = Path(json.loads(result.stdout)["source_uri"])
    assert stored.read_bytes() == (tmp_path / "shots" / "me.png").read_bytes()


@pytest.mark.parametrize("typo", ["shots/mee.png", "{tmp}/shots/mee.png"])
def test_submit_of_a_mistyped_path_says_no_such_file_and_sends_nothing(
    plane: Plane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, typo: str
) -> None:
    monkeypatch.chdir(tmp_path)
    typo = typo.format(tmp=tmp_path)
    before = _uploads(plane), plane.store.list_tasks(tenant="acme", limit=1000)[0]
    result = plane.run(["submit", "--source", typo, "--target", "s3://media/group.png"])
    assert result.exit_code == 2
    assert f"Invalid value for --source: no such file: {typo}" in result.stderr
    assert ("file://" in result.stderr) == typo.startswith("/")  # how to name a file on the API's machine
    assert "absolute" not in result.stderr
    assert "input folder" not in result.stderr
    assert (_uploads(plane), plane.store.list_tasks(tenant="acme", limit=1000)[0]) == before


def test_submit_of_a_text_file_named_png_is_refused_before_the_upload(plane: Plane, tmp_path: Path) -> None:
    notes = tmp_path / "face.png"
    notes.write_text("remember to buy milk\n", encoding="utf-8")
    before = _uploads(plane)
    result = plane.run(["submit", "--source", str(notes), "--target", "s3://media/group.png"])
    assert result.exit_code == 2
    assert "Invalid value for --source: face.png: a text file is not an image" in result.stderr
    still = tmp_path / "still.mp4"
    still.write_bytes(b"\x89PNG\r\n\x1a\n" + b"a still" * 100)
    result = plane.run(["submit", "--source", "s3://f/a.png", "--target", str(still)])
    assert result.exit_code == 2
    assert "Invalid value for --target: still.mp4: its content is an image, not a video" in result.stderr
    assert _uploads(plane) == before


def test_submit_names_the_result_location_result_and_the_format_o(plane: Plane) -> None:
    task = plane.submit_json("--result", "acme/named/result.png")
    assert task["output_uri"].endswith("/acme/named/result.png")
    # --output is the output format on every command, submit included
    result = plane.run(["submit", "--source", "s3://f/a.png", "--target", "s3://m/b.png", "--output", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state"] == "queued"
    as_format = plane.run(["submit", "--source", "s3://f/a.png", "--target", "s3://m/b.png", "--format", "json"])
    assert json.loads(as_format.stdout)["state"] == "queued"
    # ... and a result path given to it the old way is refused with the new name, never sent
    before = plane.store.list_tasks(tenant="acme", limit=1000)[0]
    old = plane.run(["submit", "--source", "s3://f/a.png", "--target", "s3://m/b.png", "--output", "acme/x.png"])
    assert old.exit_code == 2
    assert "the result's location is --result acme/x.png" in old.stderr
    assert plane.store.list_tasks(tenant="acme", limit=1000)[0] == before


def test_submit_json_passes_every_field_and_is_idempotent(plane: Plane) -> None:
    args = [
        "--priority",
        "high",
        "--sensitivity",
        "private",
        "--deadline",
        "600",
        "--budget",
        "2.5",
        "--swapper",
        "inswapper_128",
        "--face-selector",
        "largest",
        "--label",
        "team=vfx",
        "--label",
        "shot=42",
        "--idempotency-key",
        "retry-me-1",
    ]
    task = plane.submit_json(*args)
    assert set(task) == TASK_KEYS
    assert task["priority"] == "high"
    assert task["data_sensitivity"] == "private"
    assert task["deadline_seconds"] == 600
    assert task["budget_usd"] == 2.5
    assert task["options"]["swapper"] == "inswapper_128"
    assert task["options"]["face_selector"] == "largest"
    assert task["labels"] == {"team": "vfx", "shot": "42"}
    assert task["kind"] == "image"
    assert plane.submit_json(*args)["id"] == task["id"]
    clash = plane.run(
        [
            "submit",
            "--source",
            "s3://faces/other.png",
            "--target",
            "s3://media/b.png",
            "--idempotency-key",
            "retry-me-1",
        ]
    )
    assert clash.exit_code == 1
    assert "Idempotency-Key" in clash.stderr
    assert "409" in clash.stderr


def test_submit_with_an_unknown_priority_is_a_usage_error(plane: Plane) -> None:
    result = plane.run(["submit", "--source", "s3://f/a.png", "--target", "s3://m/b.png", "--priority", "asap"])
    assert result.exit_code == 2
    assert "--priority" in result.stderr
    assert plane.run(["submit", "--source", "s3://f/a.png", "--target", "s3://m/b.png", "--label", "x"]).exit_code == 2


def test_submit_with_a_bad_label_is_refused_by_the_api(plane: Plane) -> None:
    before = len(plane.store.list_tasks(tenant="acme", limit=1000)[0])
    result = plane.run(["submit", "--source", "s3://f/a.png", "--target", "s3://m/b.png", "--label", "Bad Key=x"])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: labels")
    assert "(HTTP 422)" in line
    assert len(plane.store.list_tasks(tenant="acme", limit=1000)[0]) == before


# --------------------------------------------------------------------------- tasks


def test_list_show_and_cancel(plane: Plane) -> None:
    ids = [plane.submit_json("--label", f"n={n}", as_="lister")["id"] for n in range(3)]

    everything = plane.run(["tasks", "list", "--limit", "1", "--all", "-o", "json"], as_="lister")
    assert everything.exit_code == 0, everything.output
    listed = json.loads(everything.stdout)
    assert set(listed) == {"tasks", "next_cursor"}
    assert listed["next_cursor"] is None
    assert [t["id"] for t in listed["tasks"]] == ids[::-1]  # newest first
    assert all(set(t) == TASK_KEYS for t in listed["tasks"])

    page = plane.run(["tasks", "list", "--limit", "2"], as_="lister")
    assert page.exit_code == 0, page.output
    lines = page.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "PRIORITY"]
    assert [line.split()[0] for line in lines[1:]] == ids[:0:-1]
    assert "--cursor" in page.stderr

    filtered = plane.run(["tasks", "list", "--state", "cancelled", "-o", "json"], as_="lister")
    assert json.loads(filtered.stdout)["tasks"] == []

    shown = plane.run(["tasks", "show", ids[0]], as_="lister")
    assert shown.exit_code == 0, shown.output
    assert ids[0] in shown.stdout
    assert "attempts: none yet" in shown.stdout
    as_json = json.loads(plane.run(["tasks", "show", ids[0], "-o", "json"], as_="lister").stdout)
    assert set(as_json) == TASK_KEYS | {"attempts"}

    cancelled = plane.run(["tasks", "cancel", ids[0]], as_="lister")
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.strip() == f"task {ids[0]} cancelled"
    again = plane.run(["tasks", "cancel", ids[0]], as_="lister")
    assert again.exit_code == 1
    assert again.stderr.strip() == "error: state: the task already cancelled (HTTP 409)"


def test_show_reports_attempts_with_progress(plane: Plane) -> None:
    task = plane.submit_json()
    attempt_id = _start(plane.store, task["id"])
    plane.store.record_heartbeat(attempt_id, progress={"frames": 40, "total": 120, "fps": 12.5, "eta_s": 6.4})
    shown = plane.run(["tasks", "show", task["id"]])
    assert shown.exit_code == 0, shown.output
    assert "frames 40/120  12.5 fps  eta 6s" in shown.stdout
    body = json.loads(plane.run(["tasks", "show", task["id"], "-o", "json"]).stdout)
    (attempt,) = body["attempts"]
    assert set(attempt) == ATTEMPT_KEYS
    assert attempt["progress"] == {"frames": 40, "total": 120, "fps": 12.5, "eta_s": 6.4}


def test_logs(plane: Plane, tmp_path: Path) -> None:
    task = plane.submit_json()
    missing = plane.run(["tasks", "logs", task["id"]])
    assert missing.exit_code == 1
    assert "404" in missing.stderr
    attempt_id = _start(plane.store, task["id"])
    nolog = plane.run(["tasks", "logs", task["id"]])
    assert nolog.exit_code == 1
    assert "no log is kept" in nolog.stderr
    log = tmp_path / "worker.log"
    log.write_text('{"event": "started"}\n{"event": "progress", "frames": 3}\n', encoding="utf-8")
    plane.log_files[attempt_id] = log
    shown = plane.run(["tasks", "logs", task["id"]])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == log.read_text(encoding="utf-8")
    assert plane.run(["tasks", "logs", "task_nosuchthing"]).exit_code == 1


def test_watch_prints_plain_lines_and_exits_by_outcome(plane: Plane) -> None:
    task = plane.submit_json()
    attempt_id = _start(plane.store, task["id"])
    plane.store.record_heartbeat(attempt_id, progress={"frames": 5, "total": 10, "fps": 10.0, "eta_s": 0.5})
    # the first poll must see it running: on a loaded 2-core CI machine that took over 0.3 s
    thread = _finish_later(plane.store, task["id"], attempt_id, succeed=True, delay_s=2.0)
    result = plane.run(["tasks", "watch", task["id"], "--interval", "0.05"])
    thread.join(timeout=10)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{task['id']} running on local  frames 5/10  10.0 fps  eta 0s"
    assert f"{task['id']} succeeded on local  frames 10/10  20.0 fps  eta 0s" in lines
    assert lines[-3:] == [
        f"task {task['id']} succeeded",
        f"result: {task['output_uri']}",
        f"download: fusionctl tasks output {task['id']}  ({plane.url}/v1/tasks/{task['id']}/output)",
    ]

    failing = plane.submit_json()
    attempt_id = _start(plane.store, failing["id"])
    thread = _finish_later(plane.store, failing["id"], attempt_id, succeed=False)
    result = plane.run(["tasks", "watch", failing["id"], "--interval", "0.05"])
    thread.join(timeout=10)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == f"task {failing['id']} failed: bad_input: no face"


def test_watch_draws_a_progress_bar_on_a_terminal(plane: Plane, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow_module, "_stdout_is_terminal", lambda: True)
    task = plane.submit_json()
    attempt_id = _start(plane.store, task["id"])
    plane.store.record_heartbeat(attempt_id, progress={"frames": 5, "total": 10, "fps": 10.0, "eta_s": 0.5})
    # the first poll must see it running: on a loaded 2-core CI machine that took over 0.3 s
    thread = _finish_later(plane.store, task["id"], attempt_id, succeed=True, delay_s=2.0)
    result = plane.run(["tasks", "watch", task["id"], "--interval", "0.05"])
    thread.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert "10/10" in result.stdout
    assert "━" in result.stdout  # rich's bar
    assert result.stdout.splitlines()[-3].endswith(f"task {task['id']} succeeded")
    assert result.stdout.splitlines()[-2] == f"result: {task['output_uri']}"


def test_submit_wait_exits_by_outcome(plane: Plane, monkeypatch: pytest.MonkeyPatch) -> None:
    """--wait follows the task it submitted: a stand-in 'scheduler' runs whatever acme queues next."""
    before = {t.id for t in plane.store.list_tasks(tenant="acme", limit=1000)[0]}

    def scheduler() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            new = [t for t in plane.store.list_tasks(tenant="acme", limit=1000)[0] if t.id not in before]
            if new:
                attempt_id = _start(plane.store, new[0].id)
                _finish_later(plane.store, new[0].id, attempt_id, succeed=True, delay_s=0.1).join()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=scheduler, daemon=True)
    thread.start()
    result = plane.run(
        ["submit", "--source", "s3://f/a.png", "--target", "s3://m/b.png", "--wait", "--interval", "0.05"]
    )
    thread.join(timeout=10)
    assert result.exit_code == 0, result.output
    task_id = result.stdout.splitlines()[1].split()[0]
    output_uri = plane.store.get_task(task_id).spec.output_uri
    # the end says where the result went, and how to fetch it
    assert result.stdout.splitlines()[-3:] == [
        f"task {task_id} succeeded",
        f"result: {output_uri}",
        f"download: fusionctl tasks output {task_id}  ({plane.url}/v1/tasks/{task_id}/output)",
    ]
    assert f"{task_id} succeeded on local" in result.stderr


# --------------------------------------------------------------------------- errors


def test_an_unreachable_api_exits_3(plane: Plane) -> None:
    result = plane.run(["tasks", "list"], url=f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 3
    assert "cannot reach the FusionPlane API" in result.stderr


def test_a_submitter_cannot_see_another_tenants_task(plane: Plane) -> None:
    task = plane.submit_json(as_="globex")
    for args in (["tasks", "show", task["id"]], ["tasks", "cancel", task["id"]], ["tasks", "logs", task["id"]]):
        result = plane.run(args, as_="acme")
        assert result.exit_code == 1
        assert result.stderr.strip() == "error: task_id: this task belongs to another tenant (HTTP 403)"
    denied = plane.run(["tasks", "list", "--tenant", "globex"], as_="acme")
    assert denied.exit_code == 1
    assert "403" in denied.stderr
    receipt = plane.run(["explain", task["id"]], as_="globex")
    assert receipt.exit_code == 1
    assert "operators only (HTTP 403)" in receipt.stderr
    assert plane.store.get_task(task["id"]).state == TaskState.QUEUED


# --------------------------------------------------------------------------- explain


#: the receipt's policy: a private task may run on local or onprem-k8s, never on aws-spot
PRIVATE_POLICY = parse_policy(
    {
        "targets": [
            {"name": "local", "provider": "local", "private": True},
            {
                "name": "onprem-k8s",
                "provider": "kubernetes",
                "private": True,
                "regions": ["dc1"],
                "storage": {"uri": "pvc://fp-work/tasks/", "mount_path": "/mnt/work"},
            },
            {
                "name": "aws-spot",
                "provider": "aws",
                "private": False,
                "regions": ["us-east-1"],
                "instance_types": ["g4dn.xlarge"],
                "storage": {"uri": "s3://fp-work/aws/"},
            },
        ],
        "rules": [
            {"name": "private-data", "match": {"data_sensitivity": "private"}, "targets": ["local", "onprem-k8s"]}
        ],
        "thresholds": {"load_ttl_seconds": 30},
    }
)
DECIDED_AT = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def _private_plan(task: Task) -> PlacementPlan:
    """What the real engine decides for ``task``: local has 2 slots free (1.5 s old), onprem-k8s's 4 GPUs are stale."""
    samples = {
        f"free_gpus/{target}": SignalSample(
            source="free_gpus",
            key=target,
            value=free,
            observed_at=DECIDED_AT - timedelta(seconds=age),
            ttl_seconds=60,
        )
        for target, free, age in (("local", 2, 1.5), ("onprem-k8s", 4, 95.0))
    }
    return plan(task, SignalSnapshot(taken_at=DECIDED_AT, samples=samples), PRIVATE_POLICY, DECIDED_AT)


def test_explain_shows_the_receipt(plane: Plane) -> None:
    task = plane.submit_json("--sensitivity", "private")
    plane.store.record_decision(plan=_private_plan(plane.store.get_task(task["id"])))
    first = _start(plane.store, task["id"])
    plane.store.transition_attempt(first, wanted=AttemptState.FAILED, actor="worker", exit_code=70, reason="oom")
    plane.store.transition_task(task["id"], wanted=TaskState.PLANNED, actor="scheduler", reason="failover")
    second = plane.store.create_attempt(
        task_id=task["id"], target="onprem-k8s", provider="kubernetes", token_sha256=hash_token("second")
    )
    plane.store.transition_task(task["id"], wanted=TaskState.LAUNCHING, actor="scheduler", target="onprem-k8s")

    result = plane.run(["explain", task["id"]], as_="ops")
    assert result.exit_code == 0, result.output
    out = result.stdout
    flat = "\n".join(" ".join(line.split()) for line in out.splitlines())  # columns, whitespace-insensitive
    for expected in (
        f"task {task['id']}",
        "sensitivity private",
        "state launching",
        "target onprem-k8s",
        "reason failover",
        "decision 1 of 1",
        f"policy version {PRIVATE_POLICY.version[:12]}",
        "decided at 2025-03-01T12:00:00+00:00",
        "1. local (local, private)",
        "- rule private-data ranks it 1 of 2",
        "- 2 free local slot(s)",
        "2. onprem-k8s (kubernetes, private, region dc1)",
        "aws-spot private_data the task's data is private and this target is not",
        "1. rule private-data: matched",
        "2. signal free_gpus/onprem-k8s: stale (95.0s old, ttl 30s), not used",
    ):
        assert expected in flat, f"{expected!r} not in\n{out}"
    signal_lines = {
        line.split()[0]: line.split()[1:]
        for line in out.splitlines()
        if line.split()[:1] and line.split()[0].startswith("free_gpus/")
    }
    assert signal_lines == {
        "free_gpus/local": ["2", "1.5s", "30s", "fresh"],
        "free_gpus/onprem-k8s": ["4", "95s", "30s", "STALE"],
    }
    attempts = out[out.index("\nattempts\n") :].splitlines()
    assert attempts[3].split()[:6] == ["1", first, "local", "local", "failed", "70"]
    assert attempts[3].split()[-1] == "oom"
    assert attempts[4].split()[:5] == ["2", second.id, "onprem-k8s", "kubernetes", "launching"]

    receipt = json.loads(plane.run(["explain", task["id"], "-o", "json"], as_="ops").stdout)
    assert set(receipt) == {"task", "decisions", "attempts"}
    assert set(receipt["task"]) == TASK_KEYS
    (plan,) = receipt["decisions"]
    assert set(plan) == PLAN_KEYS
    assert all(set(c) == CANDIDATE_KEYS for c in plan["candidates"])
    assert [(r["target"], r["code"]) for r in plan["rejections"]] == [("aws-spot", "private_data")]
    assert plan["signals_used"]["free_gpus/local"]["age_seconds"] == 1.5
    assert all(set(a) == ATTEMPT_KEYS for a in receipt["attempts"])
    # JSON mode is the API's receipt, unchanged
    api = httpx.get(
        f"{plane.url}/v1/tasks/{task['id']}/decision",
        headers={"Authorization": f"Bearer {plane.tokens['ops']}"},
        timeout=10,
    )
    assert receipt == api.json()


def test_explain_before_any_decision(plane: Plane) -> None:
    task = plane.submit_json()
    result = plane.run(["explain", task["id"]], as_="ops")
    assert result.exit_code == 0, result.output
    assert "no placement decision yet" in result.stdout
    assert "attempts: none" in result.stdout
    assert plane.run(["explain", "task_nosuchthing"], as_="ops").exit_code == 1


def test_a_waiting_task_shows_why_in_list_show_and_explain(plane: Plane) -> None:
    task = plane.submit_json()
    (claimed,) = [t for t in plane.store.claim_queued(batch_size=1000, scheduler_id="s") if t.id == task["id"]]
    decided = datetime.now(UTC)
    waiting = PlacementPlan(
        task_id=claimed.id,
        policy_version=POLICY_VERSION,
        decided_at=decided,
        candidates=(),
        rejections=(Rejection(target="local", code="no_capacity", detail="no free local slot: free_gpus/local = 0"),),
    )
    plane.store.start_launch_groups([PlannedLaunch(plan=waiting, wait="local: no_capacity")], actor="s")
    since = plane.store.get_task(claimed.id).queued_since
    assert since is not None
    since_text = since.isoformat().replace("+00:00", "Z")

    listed = plane.run(["tasks", "list", "--state", "queued", "--limit", "1000"])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[0].split()[-1] == "REASON"
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(claimed.id)]
    assert row.endswith("waiting: local: no_capacity")
    shown = plane.run(["tasks", "show", claimed.id])
    assert f"waiting local: no_capacity since {since_text}" in " ".join(shown.stdout.split())
    explained = plane.run(["explain", claimed.id], as_="ops")
    assert explained.exit_code == 0, explained.output
    flat = " ".join(explained.stdout.split())
    assert f"state queued waiting local: no_capacity since {since_text}" in flat
    assert "local no_capacity no free local slot: free_gpus/local = 0" in flat  # the waiting plan is the receipt
    as_json = json.loads(plane.run(["tasks", "show", claimed.id, "-o", "json"]).stdout)
    assert (as_json["queue_reason"], as_json["queued_since"]) == ("local: no_capacity", since_text)
    scrape = {"Authorization": f"Bearer {plane.tokens['ops']}"}  # /metrics needs a token
    metrics = httpx.get(f"{plane.url}/metrics", headers=scrape, timeout=10).text.splitlines()
    waiting = next(line for line in metrics if line.startswith("fusionplane_tasks_waiting "))
    oldest = next(line for line in metrics if line.startswith("fusionplane_tasks_oldest_wait_seconds "))
    assert float(waiting.split()[1]) >= 1
    assert float(oldest.split()[1]) >= 0


def test_the_task_commands_are_on_fusionctl_itself() -> None:
    from controlplane.cli.main import cli

    for name in ("submit", "tasks", "explain", "serve", "db", "tokens"):
        assert name in cli.commands, name
