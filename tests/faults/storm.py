"""The fault storm of the reliability issue, as a harness the tests and the docs share.

``python -m tests.faults.storm --tasks 2000 --replicas 1`` (or ``--replicas 2``)
runs one storm and prints its counts as one JSON line; the exit status is 1
when a check failed (the ``problems`` list says which).

What one storm does, everything on 127.0.0.1:

1. starts a real PostgreSQL (tests/support/postgres.py), moto's EC2 in server
   mode behind a fault proxy (tests/support/faultproxy.py) that answers a share
   of ``RunInstances`` with ``InsufficientInstanceCapacity``, kmock's Kubernetes
   API (refusing a share of Job creations with a ResourceQuota 403), the fake
   ARM over TLS (refusing a share of VM creations with ``AllocationFailed`` /
   ``SkuNotAvailable``) with a managed-identity token endpoint for azure-identity,
   and the fleet (tests/support/fleet.py) that plays the workers on the three
   clouds (10% of them preempted the backend's own way);
2. starts ``fusionctl serve`` (one replica, or two on the same database behind
   a small load balancer) as subprocesses in their own sessions, with a policy
   spreading work over four targets: ``local`` (the local provider running
   tests/support/stub_worker.py, which is preempted as often) and ``onprem``
   (Kubernetes), both private, and ``aws`` and ``azure``, both public;
3. submits the tasks through ``POST /v1/tasks`` (each with an
   ``Idempotency-Key``, retried across restarts), a quarter of them private;
4. every few seconds ``kill -9`` the control plane (with two replicas: the
   leader named by the ``leader_lease`` row, then measures how long the other
   one takes to hold the lease and to schedule again) and starts it again,
   until every task is final or the deadline passes;
5. lets the control plane settle (release finished resources, reconcile), then
   checks from the database and from every backend:

   - every task succeeded, or failed with a non-empty reason; none is left
     queued, planned, launching or running;
   - no duplicate backend resource: no attempt id with two resources, and no
     task with two resources alive at once (from the fleet's record of when
     each resource's worker started and stopped, and the stub workers' ledger);
   - no private task with an attempt on aws or azure (in the database), and no
     resource of a private task on either cloud (on the backends);
   - no orphan: nothing still running or billed on a backend (an EC2 instance
     not terminated, any Azure VM, NIC or disk, a Kubernetes Job, Secret or
     running pod, a local worker process) whose attempt is not live;

   and reports the counts: tasks by state, attempts by provider and state,
   kills, faults injected, preemptions, duplicates, private_on_cloud, orphans,
   takeover times and wall times.

Every process this starts is stopped by its PID at the end, whatever happened.

Keeping it within minutes on 2 cores. The storm is CPU-bound: ``fusionctl
serve`` spends about 60 ms of CPU per task (callbacks, follow, placement,
release, reconcile), and the emulators live in this process. So the
harness trims what only the emulators cost: moto's tag lookups are indexed
for the storm (tests/support/fleet.py ``moto_tag_index``) and terminated
instances are forgotten after a while (as EC2 does); kmock forgets old
requests and compacts deleted objects; the fake ARM's request log is
cleared; and this process hands the GIL over every millisecond, since every
emulator answers from one of its threads. None of it changes what the
control plane sees over HTTP.

Knobs (:class:`StormConfig`): tasks, replicas, fault rates, kills, the
deadline, the settle time, the lease and reconcile periods, the local slots.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tests.support.faultproxy import FaultProxy
from tests.support.fleet import (
    CapacityFaultArm,
    Fleet,
    FleetConfig,
    ManagedIdentityEndpoint,
    QuotaFaultCluster,
    Resource,
    ec2_capacity_faults,
    moto_tag_index,
    read_ledger,
)
from tests.support.kmock_cluster import write_kubeconfig
from tests.support.loopback import free_port
from tests.support.no_metadata import NO_METADATA_ENV
from tests.support.postgres import running_postgres

__all__ = ["StormConfig", "main", "run_storm"]

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("fusionplane.tests.storm")

FINAL_TASK_STATES = ("succeeded", "failed", "cancelled")
LIVE_ATTEMPT_STATES = ("launching", "running")
REGION = "us-east-1"
AMI = "ami-0fusionplane0storm"
AWS_TYPE = "g4dn.xlarge"
AZURE_SUBSCRIPTION = "00000000-0000-0000-0000-00000000f00d"
AZURE_GROUP = "rg-fusionplane"
AZURE_SIZE = "Standard_NC4as_T4_v3"
ARM_TOKEN = "fake-arm-token"
NAMESPACE = "fusionplane"
#: how much later than the lease length a takeover may come (a poll of the lease, a loaded machine)
TAKEOVER_SLACK_S = 5.0
#: two resources of one task whose lifetimes overlap by less than this are the fleet's scan granularity
OVERLAP_TOLERANCE_S = 0.5


@dataclass
class StormConfig:
    tasks: int = 2000
    replicas: int = 1
    seed: str = "storm"
    capacity_error_rate: float = 0.2
    preempt_rate: float = 0.1
    min_kills: int = 5
    max_kills: int = 6
    kill_every_s: tuple[float, float] = (5.0, 9.0)
    #: from the first submission until every task must be final
    deadline_s: float = 270.0
    #: after every task is final, how long the control plane may take to clean up what it owns
    settle_s: float = 25.0
    lease_s: float = 3.0
    reconcile_s: float = 10.0
    local_slots: int = 4
    submit_threads: int = 8
    work_s: tuple[float, float] = (0.2, 0.8)
    workdir: Path | None = None
    #: print progress lines to stderr
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.replicas not in (1, 2):
            raise ValueError("replicas must be 1 or 2")
        if self.tasks < 1:
            raise ValueError("tasks must be at least 1")


# --------------------------------------------------------------------------- the policy and the tasks


def storm_policy(config: StormConfig) -> dict[str, Any]:
    """Four targets, one per backend; private work stays on local and onprem, public work is spread by label."""
    subnet = (
        f"/subscriptions/{AZURE_SUBSCRIPTION}/resourceGroups/rg-net/providers/Microsoft.Network"
        "/virtualNetworks/vnet-workers/subnets/workers"
    )
    return {
        "description": "fault storm (tests/faults/storm.py): one target per backend",
        "thresholds": {
            "max_attempts": 5,
            "retry_backoff_seconds": 1,
            "retry_backoff_max_seconds": 4,
        },
        "targets": [
            {"name": "local", "provider": "local", "private": True, "settings": {"slots": config.local_slots}},
            {
                "name": "onprem",
                "provider": "kubernetes",
                "private": True,
                "settings": {"namespace": NAMESPACE, "gpus": 0, "ttl_seconds_after_finished": 3600},
            },
            {
                "name": "aws",
                "provider": "aws",
                "private": False,
                "regions": [REGION],
                "instance_types": [AWS_TYPE],
                "settings": {"image_id": AMI},
            },
            {
                "name": "azure",
                "provider": "azure",
                "private": False,
                "regions": ["eastus"],
                "instance_types": [AZURE_SIZE],
                "settings": {
                    "subscription_id": AZURE_SUBSCRIPTION,
                    "resource_group": AZURE_GROUP,
                    "subnet_id": subnet,
                    "image": "Canonical:ubuntu-24_04-lts:server:latest",
                    "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests fusionplane@storm",
                },
            },
        ],
        "rules": [
            {"name": "private-stays-home", "match": {"data_sensitivity": "private"}, "targets": ["local", "onprem"]},
            {"name": "lane-aws", "match": {"labels": {"lane": "aws"}}, "targets": ["aws", "azure", "onprem"]},
            {"name": "lane-azure", "match": {"labels": {"lane": "azure"}}, "targets": ["azure", "aws", "onprem"]},
            {"name": "lane-onprem", "match": {"labels": {"lane": "onprem"}}, "targets": ["onprem", "aws", "azure"]},
            {"name": "lane-local", "match": {"labels": {"lane": "local"}}, "targets": ["local", "onprem", "aws"]},
        ],
    }


def task_body(index: int) -> dict[str, Any]:
    """Task ``index`` of the storm: a quarter private; public ones spread over four lanes."""
    slot = index % 20
    private = slot < 5
    lane = (
        "private" if private else ("aws" if slot < 10 else "azure" if slot < 15 else "onprem" if slot < 18 else "local")
    )
    # the azure lane's data is in Blob storage: an Azure worker reads no s3:// (plan() rejects it unreachable_input)
    blob = ("az", "stormacct/storm-in", "stormacct/storm-out")
    store, inbox, outbox = blob if lane == "azure" else ("s3", "storm-in", "storm-out")
    return {
        "source": f"{store}://{inbox}/faces/face-{index % 7}.png",
        "target": f"{store}://{inbox}/frames/frame-{index}.png",
        "output": f"{store}://{outbox}/swapped-{index}.png",
        "data_sensitivity": "private" if private else "public",
        "priority": "high" if index % 10 == 0 else "normal",
        "labels": {"lane": lane, "storm": "1"},
    }


# --------------------------------------------------------------------------- serve replicas


class Replica:
    """One ``fusionctl serve`` process, restartable on its port; stopped by PID."""

    def __init__(self, index: int, port: int, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.index, self.port, self.argv, self.env, self.workdir = index, port, argv, env, workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.logs: list[Path] = []
        #: CPU seconds (user + system) of the incarnations that ended
        self.cpu_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def holder(self) -> str | None:
        """Its name in the leader lease (``<hostname>-<pid>``, as ``fusionctl serve`` names its scheduler)."""
        return f"{socket.gethostname()}-{self.proc.pid}" if self.proc is not None else None

    def start(self, *, migrate: bool) -> None:
        self.starts += 1
        path = self.workdir / "logs" / f"serve-{self.index}-{self.starts}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.logs.append(path)
        argv = [*self.argv, "--port", str(self.port)] + ([] if migrate else ["--no-migrate"])
        with path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a kill reaches it alone
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        started = time.monotonic()
        deadline = started + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                if not self.alive():
                    raise RuntimeError(f"serve {self.index} exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return time.monotonic() - started
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve {self.index} not ready in {timeout_s:.0f} s:\n{self.log_tail()}")
                time.sleep(0.1)

    def _account(self) -> None:
        """Add the running incarnation's CPU time (from /proc, before it is reaped)."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            self.cpu_s += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """``kill -9`` by PID, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self._account()
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (uvicorn and the job scheduler shut down), SIGKILL after a bounded wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._account()
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, chars: int = 3000) -> str:
        if not self.logs:
            return ""
        with contextlib.suppress(OSError):
            return self.logs[-1].read_text(errors="replace")[-chars:]
        return ""


# --------------------------------------------------------------------------- the database, read directly


class Ledger:
    """Reads the store's tables (the harness's view; nothing is written)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)

    def close(self) -> None:
        self.engine.dispose()

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def tasks_by_state(self) -> dict[str, int]:
        return {r.state: int(r.n) for r in self.rows("SELECT state, count(*) AS n FROM tasks GROUP BY state")}

    def open_tasks(self) -> int:
        return int(self.scalar("SELECT count(*) FROM tasks WHERE state NOT IN ('succeeded', 'failed', 'cancelled')"))

    def lease(self) -> dict[str, Any] | None:
        try:
            rows = self.rows("SELECT holder, token, renewed_at, expires_at FROM leader_lease WHERE name = 'scheduler'")
        except sa.exc.DBAPIError:
            return None  # no such table: the lease is not built (yet)
        if not rows:
            return None
        row = rows[0]
        return {"holder": row.holder, "token": int(row.token), "expires_at": row.expires_at}

    def first_event_after(self, moment: float, actors: list[str], kind: str | None = None) -> float | None:
        """When the first event by one of ``actors`` after ``moment`` (epoch seconds) was written."""
        if not actors:
            return None
        sql = "SELECT min(at) FROM events WHERE at > :after AND actor IN :actors"
        if kind is not None:
            sql += " AND kind = :kind"
        stmt = sa.text(sql).bindparams(sa.bindparam("actors", expanding=True))
        with self.engine.connect() as conn:
            value = conn.execute(
                stmt, {"after": datetime.fromtimestamp(moment).astimezone(), "actors": actors, "kind": kind}
            ).scalar()
        return value.timestamp() if isinstance(value, datetime) else None


# --------------------------------------------------------------------------- the storm


@dataclass
class _Kill:
    at: float
    replica: int
    holder: str | None
    was_leader: bool | None
    takeover_s: float | None = None
    new_holder: str | None = None
    resumed_s: float | None = None
    claimed_s: float | None = None
    restart_ready_s: float | None = None


@dataclass
class _Submitted:
    ids: dict[int, str] = field(default_factory=dict)
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    done: threading.Event = field(default_factory=threading.Event)


def _say(config: StormConfig, message: str) -> None:
    if config.verbose:
        print(f"[storm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_storm(config: StormConfig) -> dict[str, Any]:
    """Run one storm (see the module docstring); returns the counts, with ``problems`` (empty: all checks held)."""
    with contextlib.ExitStack() as stack:
        workdir = config.workdir
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fusionplane-storm-")))
        workdir.mkdir(parents=True, exist_ok=True)
        return _Storm(config, workdir, stack).run()
    raise AssertionError("unreachable")  # pragma: no cover


class _Storm:
    def __init__(self, config: StormConfig, workdir: Path, stack: contextlib.ExitStack) -> None:
        self.config, self.workdir, self.stack = config, workdir, stack
        self.owner = f"storm-{os.getpid()}-{int(time.time())}"
        self.replicas: list[Replica] = []
        self.kills: list[_Kill] = []
        self.rng = random.Random(config.seed)
        self.wall: dict[str, float] = {}
        self.ledger_path = workdir / "stub-ledger.jsonl"

    # -- setup ---------------------------------------------------------------------------------

    def _backends(self) -> None:
        config, stack, workdir = self.config, self.stack, self.workdir
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
        server = stack.enter_context(running_postgres())
        database = server.create_database("storm")
        self.database_url = server.url(database)
        self.ledger = Ledger(self.database_url)
        stack.callback(self.ledger.close)

        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends
        from moto.server import ThreadedMotoServer

        stack.enter_context(moto_tag_index())
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()

        def stop_moto() -> None:
            moto.stop()
            if moto._server is not None:  # stop() leaves the listening socket open
                moto._server.server_close()

        stack.callback(stop_moto)
        host, port = moto.get_host_and_port()
        self.ec2_proxy = stack.enter_context(
            FaultProxy([f"http://{host}:{port}"], decide=ec2_capacity_faults(config.capacity_error_rate, config.seed))
        )

        self.cluster = QuotaFaultCluster(quota_error_rate=config.capacity_error_rate, seed=config.seed)
        stack.enter_context(self.cluster)
        self.kubeconfig = write_kubeconfig(workdir / "kubeconfig.json", {"storm": self.cluster.url})

        self.arm = CapacityFaultArm(
            cert_dir=workdir / "arm-tls",
            capacity_error_rate=config.capacity_error_rate,
            seed=config.seed,
            resource_groups=(AZURE_GROUP,),
            token=ARM_TOKEN,
            provision_polls=2,
            delete_polls=1,
            page_size=200,
        )
        stack.enter_context(self.arm)
        self.identity = stack.enter_context(ManagedIdentityEndpoint(ARM_TOKEN))

        self.fleet = Fleet(
            FleetConfig(
                owner=self.owner,
                seed=config.seed,
                preempt_rate=config.preempt_rate,
                work_s=config.work_s,
                aws_region=REGION,
                k8s_namespace=NAMESPACE,
            ),
            moto_backend=lambda: ec2_backends[DEFAULT_ACCOUNT_ID][REGION],
            cluster=self.cluster,
            arm=self.arm,
        )
        stack.enter_context(self.fleet)

    def _serve_env(self, public_url: str | None) -> dict[str, str]:
        config = self.config
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "FUSIONPLANE_VAR_DIR": str(self.workdir / "var"),
            "FUSIONPLANE_LOCAL_WORKER_COMMAND": f"{sys.executable} -S -m tests.support.stub_worker",
            "FUSIONPLANE_STUB_PREEMPT_RATE": str(config.preempt_rate),
            "FUSIONPLANE_STUB_WORK_S": f"{config.work_s[0]},{config.work_s[1]}",
            "FUSIONPLANE_STUB_SEED": config.seed,
            "FUSIONPLANE_STUB_LEDGER": str(self.ledger_path),
            # local workers get a minimal environment: the stub's settings must be named to reach it
            "FUSIONPLANE_LOCAL_WORKER_ENV": ",".join(
                (
                    "FUSIONPLANE_STUB_PREEMPT_RATE",
                    "FUSIONPLANE_STUB_WORK_S",
                    "FUSIONPLANE_STUB_SEED",
                    "FUSIONPLANE_STUB_LEDGER",
                )
            ),
            "FUSIONPLANE_WORKER_IMAGE": "registry.example/fusionplane-worker:storm",
            "FUSIONPLANE_WORKER_GPUS": "0",
            "FUSIONPLANE_OWNER": self.owner,
            "FUSIONPLANE_LEADER_LEASE_S": str(config.lease_s),
            "FUSIONPLANE_RECONCILE_S": str(config.reconcile_s),
            "FUSIONPLANE_MODEL_DIR": str(self.workdir / "no-models"),
            # AWS: boto3's own settings and credential chain, pointed at the fault proxy in front of moto
            "AWS_ENDPOINT_URL": self.ec2_proxy.url,
            "FUSIONPLANE_AWS_ENDPOINT_URL": self.ec2_proxy.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials"),
            # Azure: the fake ARM over TLS (its CA trusted by requests), a managed identity for the token
            "FUSIONPLANE_AZURE_ARM_URL": self.arm.url,
            "REQUESTS_CA_BUNDLE": str(self.arm.ca_path),
            **self.identity.env(),
            "FUSIONPLANE_AZURE_PRICES_URL": f"http://127.0.0.1:{free_port()}",  # refuses: no retail prices here
            # Kubernetes: kmock through a kubeconfig; its capacity poll has no nodes to count, so it is off
            "KUBECONFIG": str(self.kubeconfig),
            "FUSIONPLANE_SIGNALS_OFF": "kubernetes",
        }
        if public_url:
            env["FUSIONPLANE_PUBLIC_URL"] = public_url
        # the storm's buckets, granted to the insecure-dev tenant (s3 is denied by default)
        storage = self.workdir / "storage.json"
        grant = {
            "s3_read": ["s3://storm-in/"],
            "s3_write": ["s3://storm-out/"],
            "az_read": ["az://stormacct/storm-in/"],
            "az_write": ["az://stormacct/storm-out/"],
            "web_hosts": ["*"],
        }
        storage.write_text(json.dumps({"version": 1, "tenants": {"dev": grant}}))
        env["FUSIONPLANE_STORAGE_FILE"] = str(storage)
        return {**env, **NO_METADATA_ENV}  # no SDK asks a metadata address

    def _control_planes(self) -> None:
        config = self.config
        policy = self.workdir / "policy.json"
        policy.write_text(json.dumps(storm_policy(config), indent=2))
        ports = [free_port() for _ in range(config.replicas)]
        public_url = None
        if config.replicas > 1:
            self.balancer = self.stack.enter_context(FaultProxy([f"http://127.0.0.1:{p}" for p in ports]))
            public_url = self.balancer.url
        env = self._serve_env(public_url)
        argv = [
            sys.executable,
            "-m",
            "controlplane.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--insecure-dev",
            # the emulated clouds run on this machine, so their workers do reach a loopback callback URL
            "--allow-loopback-callbacks",
            "--database-url",
            self.database_url,
            "--policy-file",
            str(policy),
            "--local-slots",
            str(config.local_slots),
        ]
        for index, port in enumerate(ports):
            self.replicas.append(Replica(index, port, argv, env, self.workdir))
        self.stack.callback(self._stop_everything)
        started = time.monotonic()
        for index, replica in enumerate(self.replicas):
            replica.start(migrate=index == 0)  # one migrates; the others wait for it
            replica.wait_ready()
        self.wall["startup_s"] = round(time.monotonic() - started, 2)
        self.api_url = public_url or self.replicas[0].url

    def _stop_everything(self) -> None:
        for replica in self.replicas:
            with contextlib.suppress(Exception):
                replica.stop()
        self._stop_stub_workers()

    def _stop_stub_workers(self) -> None:
        """Stub workers still running (started by our control planes): SIGKILL by PID, after checking it is one."""
        ended = {(r.get("attempt_id"), r.get("pid")) for r in read_ledger(self.ledger_path) if r.get("event") == "end"}
        for row in read_ledger(self.ledger_path):
            if row.get("event") != "start" or (row.get("attempt_id"), row.get("pid")) in ended:
                continue
            pid = int(row.get("pid") or 0)
            if pid and _is_stub_worker(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # -- submitting ------------------------------------------------------------------------------

    def _submit(self, submitted: _Submitted, deadline: float) -> None:
        config = self.config
        lock = threading.Lock()

        def one(index: int, client: httpx.Client) -> None:
            body = task_body(index)
            key = f"{config.seed}-{index}"
            while time.monotonic() < deadline:
                try:
                    answer = client.post(f"{self.api_url}/v1/tasks", json=body, headers={"Idempotency-Key": key})
                except httpx.HTTPError as exc:
                    with lock:
                        submitted.retries += 1
                        submitted.errors[type(exc).__name__] += 1
                    time.sleep(0.2)
                    continue
                if answer.status_code == 202:
                    with lock:
                        submitted.ids[index] = answer.json()["id"]
                    return
                with lock:
                    submitted.retries += 1
                    submitted.errors[f"http {answer.status_code}"] += 1
                if answer.status_code < 500 and answer.status_code != 429:
                    return  # refused for good: counted, and the check on submitted tasks says so
                time.sleep(0.2)

        def lane(indices: list[int]) -> None:
            with httpx.Client(timeout=10.0) as client:
                for index in indices:
                    one(index, client)

        with ThreadPoolExecutor(max_workers=config.submit_threads, thread_name_prefix="storm-submit") as pool:
            shards = [list(range(i, config.tasks, config.submit_threads)) for i in range(config.submit_threads)]
            for future in [pool.submit(lane, shard) for shard in shards]:
                future.result()
        submitted.done.set()

    # -- killing ---------------------------------------------------------------------------------

    def _victim(self) -> tuple[Replica, str | None, bool | None]:
        """The replica to kill: the lease holder with two replicas (None: the lease names nobody we run)."""
        if len(self.replicas) == 1:
            lease = self.ledger.lease()
            holder = lease["holder"] if lease else None
            return self.replicas[0], holder, None
        lease = self.ledger.lease()
        holder = lease["holder"] if lease else None
        for replica in self.replicas:
            if replica.alive() and holder is not None and replica.holder == holder:
                return replica, holder, True
        alive = [r for r in self.replicas if r.alive()]
        return (alive[0] if alive else self.replicas[0]), holder, False

    def _kill_one(self) -> _Kill:
        replica, holder, was_leader = self._victim()
        killed_as = replica.holder
        at = time.time()
        replica.kill()
        kill = _Kill(at=at, replica=replica.index, holder=holder, was_leader=was_leader)
        _say(self.config, f"kill -9 serve {replica.index} ({killed_as}; lease holder {holder})")
        if len(self.replicas) > 1:
            self._measure_takeover(kill, killed_as)
        restarted = time.monotonic()
        replica.start(migrate=False)
        replica.wait_ready()
        kill.restart_ready_s = round(time.monotonic() - restarted, 2)
        return kill

    def _measure_takeover(self, kill: _Kill, killed_as: str | None) -> None:
        """Wait (bounded) until a surviving replica holds the lease; then when it scheduled again."""
        survivors = [r.holder for r in self.replicas if r.alive() and r.holder is not None]
        limit = kill.at + self.config.lease_s + TAKEOVER_SLACK_S * 2
        while time.time() < limit:
            lease = self.ledger.lease()
            if lease is not None and lease["holder"] in survivors and lease["holder"] != killed_as:
                kill.takeover_s = round(time.time() - kill.at, 2)
                kill.new_holder = lease["holder"]
                break
            time.sleep(0.1)
        actors = [kill.new_holder] if kill.new_holder else [s for s in survivors if s]
        # the survivor's scheduler writes events as it claims, launches and follows: the first one is the resume
        horizon = time.time() + self.config.lease_s + TAKEOVER_SLACK_S
        while time.time() < horizon and kill.resumed_s is None:
            first = self.ledger.first_event_after(kill.at, actors)
            if first is not None:
                kill.resumed_s = round(first - kill.at, 2)
            else:
                time.sleep(0.2)
        claimed = self.ledger.first_event_after(kill.at, actors, kind="task.claimed")
        kill.claimed_s = round(claimed - kill.at, 2) if claimed is not None else None

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        config = self.config
        began = time.monotonic()
        cpu_began = time.process_time()
        # the emulators answer from threads of this process: hand the GIL over sooner than every 5 ms,
        # or each request waits behind whichever thread holds it
        switch = sys.getswitchinterval()
        sys.setswitchinterval(0.001)
        self.stack.callback(sys.setswitchinterval, switch)
        self._backends()
        self._control_planes()
        _say(config, f"backends and {config.replicas} control plane(s) up in {time.monotonic() - began:.1f} s")

        storm_began = time.monotonic()
        deadline = storm_began + config.deadline_s
        submitted = _Submitted()
        submitter = threading.Thread(target=self._submit, args=(submitted, deadline), name="storm-submit", daemon=True)
        submitter.start()
        next_kill = time.monotonic() + self.rng.uniform(*config.kill_every_s)
        open_tasks = -1
        last_report = 0.0
        while time.monotonic() < deadline:
            if submitted.done.is_set():
                if "submit_s" not in self.wall:
                    self.wall["submit_s"] = round(time.monotonic() - storm_began, 2)
                open_tasks = self.ledger.open_tasks()
                if open_tasks == 0:
                    break
            now = time.monotonic()
            if now >= next_kill and len(self.kills) < config.max_kills:
                self.kills.append(self._kill_one())
                next_kill = time.monotonic() + self.rng.uniform(*config.kill_every_s)
            if config.verbose and now - last_report > 5:
                last_report = now
                _say(config, f"submitted {len(submitted.ids)}, tasks {self.ledger.tasks_by_state()}")
            time.sleep(0.5)
        self.wall["storm_s"] = round(time.monotonic() - storm_began, 2)
        submitter.join(30)
        self.launch_latency = self._launch_latency()
        _say(config, f"storm over after {self.wall['storm_s']} s; open tasks {open_tasks}")

        settle_began = time.monotonic()
        orphans = self._orphans()
        while orphans["total"] and time.monotonic() - settle_began < config.settle_s:
            time.sleep(1.0)
            orphans = self._orphans()
        self.wall["settle_s"] = round(time.monotonic() - settle_began, 2)
        result = self._report(submitted, orphans)
        self.wall["total_s"] = round(time.monotonic() - began, 2)
        result["wall_s"] = dict(self.wall)
        for replica in self.replicas:
            replica._account()
        result["cpu_s"] = {
            "serve": round(sum(r.cpu_s for r in self.replicas), 1),
            "harness_and_emulators": round(time.process_time() - cpu_began, 1),
        }
        (self.workdir / "storm-result.json").write_text(json.dumps(result, default=str, indent=1))
        return result

    def _launch_latency(self) -> dict[str, float]:
        """Mean seconds per accepted launch, per provider, from a live replica's /metrics (since its start)."""
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for replica in self.replicas:
            if not replica.alive():
                continue
            with contextlib.suppress(httpx.HTTPError):
                text = httpx.get(f"{replica.url}/metrics", timeout=5).text
                for line in text.splitlines():
                    for suffix, into in (("_sum", sums), ("_count", counts)):
                        prefix = f'fusionplane_launch_seconds{suffix}{{provider="'
                        if line.startswith(prefix):
                            provider = line[len(prefix) :].split('"', 1)[0]
                            into[provider] = into.get(provider, 0.0) + float(line.rsplit(" ", 1)[1])
        return {p: round(sums[p] / counts[p], 3) for p in sorted(sums) if counts.get(p)}

    # -- checks ----------------------------------------------------------------------------------

    def _live_attempts(self) -> set[str]:
        return {r.id for r in self.ledger.rows("SELECT id FROM attempts WHERE state IN ('launching', 'running')")}

    def _orphans(self) -> dict[str, Any]:
        """Resources still running or billed on a backend whose attempt is not live in the store."""
        live = self._live_attempts()
        found: Counter[str] = Counter()
        examples: list[str] = []
        for row in self.fleet.inventory():
            if row["live"] and row["attempt_id"] not in live:
                found[f"{row['backend']}:{row['kind']}"] += 1
                if len(examples) < 10:
                    examples.append(
                        f"{row['backend']} {row['kind']} {row['name']} ({row['state']}) {row['attempt_id']}"
                    )
        for pid, attempt_id in self._running_stub_workers():
            if attempt_id not in live:
                found["local:process"] += 1
                if len(examples) < 10:
                    examples.append(f"local process {pid} {attempt_id}")
        return {"total": sum(found.values()), "by_kind": dict(found), "examples": examples}

    def _running_stub_workers(self) -> list[tuple[int, str]]:
        rows = read_ledger(self.ledger_path)
        ended = {(r.get("attempt_id"), r.get("pid")) for r in rows if r.get("event") == "end"}
        running = []
        for row in rows:
            if row.get("event") == "start" and (row.get("attempt_id"), row.get("pid")) not in ended:
                pid = int(row.get("pid") or 0)
                if pid and _is_stub_worker(pid):
                    running.append((pid, str(row.get("attempt_id"))))
        return running

    def _local_spans(self) -> list[Resource]:
        """The stub workers' lifetimes as resources (start and end from the ledger, else the exit-code file)."""
        rows = read_ledger(self.ledger_path)
        spans: dict[tuple[str, int], Resource] = {}
        for row in rows:
            key = (str(row.get("attempt_id")), int(row.get("pid") or 0))
            if row.get("event") == "start":
                spans[key] = Resource(
                    backend="local",
                    key=f"{key[0]}/{key[1]}",
                    name=str(key[1]),
                    attempt_id=key[0],
                    task_id=str(row.get("task_id")),
                    first_seen=float(row["at"]),
                    uid=str(key[1]),
                )
        for row in rows:
            key = (str(row.get("attempt_id")), int(row.get("pid") or 0))
            if row.get("event") == "end" and key in spans:
                spans[key].end(float(row["at"]), str(row.get("outcome")))
        state_dir = self.workdir / "var" / "local-provider"
        for (attempt_id, pid), span in spans.items():
            if span.ended is None and not _is_stub_worker(pid):
                with contextlib.suppress(OSError):
                    span.end((state_dir / attempt_id / "exit_code").stat().st_mtime, "killed")
        return list(spans.values())

    def _report(self, submitted: _Submitted, orphans: dict[str, Any]) -> dict[str, Any]:
        config, ledger = self.config, self.ledger
        problems: list[str] = []
        tasks_by_state = ledger.tasks_by_state()
        total_tasks = sum(tasks_by_state.values())
        open_rows = ledger.rows(
            "SELECT t.id, t.state, t.data_sensitivity, "
            "(SELECT string_agg(a.provider || ':' || a.state || ':' || coalesce(a.backend_ref, '-'), ' ' "
            "ORDER BY a.number) FROM attempts a WHERE a.task_id = t.id) AS attempts, "
            "(SELECT a.id FROM attempts a WHERE a.task_id = t.id ORDER BY a.number DESC LIMIT 1) AS newest "
            "FROM tasks t WHERE t.state NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY t.id"
        )
        open_count = len(open_rows)
        # an unsent launch leaves nothing on its backend: check that for the unfinished tasks' newest attempts
        seen_attempts = {r.attempt_id for r in self.fleet.snapshot()} | {r.attempt_id for r in self._local_spans()}
        seen_attempts |= {row["attempt_id"] for row in self.fleet.inventory()}
        unsent = [r for r in open_rows if (r.attempts or "").endswith(":launching:-")]
        unsent_with_resource = sum(1 for r in unsent if r.newest in seen_attempts)
        open_causes = Counter(_open_cause(r.state, r.attempts or "") for r in open_rows)
        by_task: dict[str, list[Resource]] = defaultdict(list)
        for resource in self.fleet.snapshot():
            by_task[resource.task_id].append(resource)
        # what the fleet saw of the unfinished tasks whose newest attempt is not just an unsent launch
        open_seen = [
            f"{r.id} {r.state} [{r.attempts}] fleet: "
            + (
                ", ".join(
                    f"{x.backend} {x.attempt_id} {x.how or 'alive'} delivered={x.delivered} hb={x.heartbeat}"
                    for x in by_task.get(r.id, [])
                )
                or "nothing"
            )
            for r in open_rows
            if not (r.attempts or "").endswith(":launching:-")
        ][:10]
        no_reason = int(
            ledger.scalar("SELECT count(*) FROM tasks WHERE state = 'failed' AND coalesce(trim(reason), '') = ''")
        )
        failure_reasons = Counter(
            _reason_kind(r.reason) for r in ledger.rows("SELECT reason FROM tasks WHERE state = 'failed'")
        )
        attempts: dict[str, dict[str, int]] = defaultdict(dict)
        for row in ledger.rows("SELECT provider, state, count(*) AS n FROM attempts GROUP BY provider, state"):
            attempts[row.provider][row.state] = int(row.n)
        private_on_cloud_db = int(
            ledger.scalar(
                "SELECT count(*) FROM attempts a JOIN tasks t ON t.id = a.task_id "
                "WHERE t.data_sensitivity = 'private' AND a.provider IN ('aws', 'azure')"
            )
        )
        private_ids = {r.id for r in ledger.rows("SELECT id FROM tasks WHERE data_sensitivity = 'private'")}
        resources = self.fleet.snapshot()
        local = self._local_spans()
        private_on_cloud_backend = sorted(
            {f"{r.backend}:{r.name}" for r in resources if r.backend in ("aws", "azure") and r.task_id in private_ids}
        )
        duplicates = _duplicates([*resources, *local], now=time.time())
        preemptions = Counter(r.backend for r in resources if r.how == "preempted")
        preemptions["local"] = sum(1 for r in local if r.how == "preempted")
        injected = {
            "aws": dict(self.ec2_proxy.counts()["injected"]),
            "azure": dict(self.arm.refused),
            "kubernetes": {"ResourceQuota 403": self.cluster.refused},
        }

        if len(submitted.ids) != config.tasks or len(set(submitted.ids.values())) != config.tasks:
            problems.append(f"submitted {len(set(submitted.ids.values()))} distinct tasks of {config.tasks}")
        if total_tasks != config.tasks:
            problems.append(f"the store holds {total_tasks} tasks, {config.tasks} were submitted")
        if open_count:
            problems.append(f"{open_count} tasks not final after {config.deadline_s:.0f} s")
        if no_reason:
            problems.append(f"{no_reason} failed tasks without a reason")
        if duplicates["attempts_with_two_resources"] or duplicates["tasks_with_overlapping_resources"]:
            problems.append(f"duplicate backend resources: {duplicates['examples'][:5]}")
        if private_on_cloud_db or private_on_cloud_backend:
            problems.append(
                f"private tasks on a cloud: db {private_on_cloud_db}, backends {private_on_cloud_backend[:5]}"
            )
        if orphans["total"]:
            problems.append(
                f"{orphans['total']} orphaned resources after {config.settle_s:.0f} s: {orphans['by_kind']}"
            )
        if len(self.kills) < config.min_kills:
            problems.append(f"only {len(self.kills)} kills (at least {config.min_kills} wanted): the storm ended first")
        takeovers = [k.takeover_s for k in self.kills if k.takeover_s is not None]
        if config.replicas > 1:
            unknown = [k for k in self.kills if not k.was_leader]
            if unknown:
                problems.append(f"{len(unknown)} kills could not find the leader in leader_lease (killed another)")
            missing = [k for k in self.kills if k.was_leader and k.takeover_s is None]
            if missing:
                problems.append(f"{len(missing)} leader kills with no takeover within the lease + slack")
            slow = [t for t in takeovers if t > config.lease_s + TAKEOVER_SLACK_S]
            if slow:
                problems.append(f"takeovers slower than lease {config.lease_s} s + {TAKEOVER_SLACK_S} s: {slow}")
            # scheduling resumed: the new leader's first write (none when it found nothing to do)
            late = [k.resumed_s for k in self.kills if k.resumed_s and k.resumed_s > config.lease_s + TAKEOVER_SLACK_S]
            if late:
                problems.append(
                    f"scheduling resumed later than lease {config.lease_s} s + {TAKEOVER_SLACK_S} s: {late}"
                )
        if self.fleet.errors:
            problems.append(f"fleet errors {dict(self.fleet.errors)}: {self.fleet.last_errors[:3]}")

        return {
            "replicas": config.replicas,
            "tasks": config.tasks,
            "submitted": len(set(submitted.ids.values())),
            "submit_retries": submitted.retries,
            "tasks_by_state": tasks_by_state,
            "open_tasks": open_count,
            "open_by_cause": dict(open_causes),
            # of the tasks whose newest attempt is launching with no backend ref: how many have a resource anywhere
            "open_unsent_launches": {"tasks": len(unsent), "with_a_backend_resource": unsent_with_resource},
            "open_examples": [f"{r.id} {r.state} {r.data_sensitivity} [{r.attempts}]" for r in open_rows[:5]],
            "open_seen_by_fleet": open_seen,
            "failed_without_reason": no_reason,
            "failure_reasons": dict(failure_reasons.most_common(8)),
            "attempts_by_provider_state": {p: dict(sorted(s.items())) for p, s in sorted(attempts.items())},
            "kills": len(self.kills),
            "restarts": sum(r.starts for r in self.replicas) - len(self.replicas),
            "kill_log": [asdict(k) for k in self.kills],
            "takeover_s": takeovers,
            "resume_s": [k.resumed_s for k in self.kills if k.resumed_s is not None],
            "capacity_errors_injected": injected,
            "preemptions_played": dict(preemptions),
            "resources_seen": dict(Counter(r.backend for r in [*resources, *local])),
            "duplicates": duplicates["attempts_with_two_resources"] + duplicates["tasks_with_overlapping_resources"],
            "duplicate_detail": duplicates,
            "private_on_cloud": private_on_cloud_db + len(private_on_cloud_backend),
            "orphans": orphans["total"],
            "orphan_detail": orphans,
            "fleet": {
                "counts": dict(sorted(self.fleet.counts.items())),
                "endings": dict(Counter(f"{r.backend}:{r.how or 'alive'}" for r in resources)),
                "errors": dict(self.fleet.errors),
            },
            "lease": _jsonable(self.ledger.lease()),
            "launch_latency_s": self.launch_latency,
            "problems": problems,
        }


def _duplicates(resources: list[Resource], *, now: float) -> dict[str, Any]:
    """Attempt ids with two resources, and tasks with two resources alive at the same time."""
    by_attempt: dict[str, set[str]] = defaultdict(set)
    by_task: dict[str, list[Resource]] = defaultdict(list)
    for resource in resources:
        if resource.attempt_id:
            by_attempt[resource.attempt_id].add(f"{resource.backend}:{resource.uid}")
        if resource.task_id:
            by_task[resource.task_id].append(resource)
    examples = []
    two = [a for a, uids in by_attempt.items() if len(uids) > 1]
    for attempt_id in two[:5]:
        examples.append(f"attempt {attempt_id}: {sorted(by_attempt[attempt_id])}")
    overlapping = []
    for task_id, spans in by_task.items():
        spans.sort(key=lambda r: r.first_seen)
        for earlier, later in itertools.pairwise(spans):
            end = earlier.ended if earlier.ended is not None else now
            if later.first_seen < end - OVERLAP_TOLERANCE_S:
                overlapping.append(task_id)
                if len(examples) < 10:
                    examples.append(
                        f"task {task_id}: {earlier.backend} {earlier.name} ({earlier.how or 'alive'}, "
                        f"{earlier.first_seen:.1f}-{end:.1f}) and {later.backend} {later.name} "
                        f"from {later.first_seen:.1f}"
                    )
                break
    return {
        "attempts_with_two_resources": len(two),
        "tasks_with_overlapping_resources": len(overlapping),
        "examples": examples,
    }


def _open_cause(state: str, attempts: str) -> str:
    """Why a task is not final, from its state and its attempts (``provider:state:backend_ref`` each)."""
    if state == "planned":
        return "planned: claimed, never launched"
    if state == "queued":
        return "queued"
    newest = attempts.split()[-1] if attempts else ""
    provider, _, rest = newest.partition(":")
    attempt_state, _, ref = rest.partition(":")
    if attempt_state in LIVE_ATTEMPT_STATES and ref == "-":
        return f"{state}: newest attempt {attempt_state} with no backend ref ({provider})"
    if attempt_state in LIVE_ATTEMPT_STATES:
        return f"{state}: newest attempt {attempt_state} on {provider}"
    return f"{state}: no live attempt (newest {attempt_state or 'none'})"


def _reason_kind(reason: str | None) -> str:
    """A failure reason without its ids, so that counts group alike reasons."""
    text = (reason or "").strip()
    if not text:
        return "(none)"
    if text.startswith("every candidate failed to launch"):
        codes = sorted({part.split(":")[1].strip() for part in text.split(";") if part.count(":") >= 2})
        return "every candidate failed to launch: " + ", ".join(codes)
    return text[:80]


def _is_stub_worker(pid: int) -> bool:
    try:
        return b"tests.support.stub_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.storm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1)
    parser.add_argument("--seed", default="storm")
    parser.add_argument("--kills", type=int, default=5, help="at least this many kills (default 5)")
    parser.add_argument("--max-kills", type=int, default=6)
    parser.add_argument("--deadline", type=float, default=270.0, help="seconds until every task must be final")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and state here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    config = StormConfig(
        tasks=args.tasks,
        replicas=args.replicas,
        seed=args.seed,
        min_kills=args.kills,
        max_kills=max(args.max_kills, args.kills),
        deadline_s=args.deadline,
        workdir=args.workdir,
        verbose=not args.quiet,
    )
    result = run_storm(config)
    print(json.dumps(result, default=str))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
