"""A capacity refusal walks the whole chain, aws -> azure -> local, through the real executor, in seconds.

The issue's end-to-end case: a public task planned for EC2 Spot that hits
``InsufficientInstanceCapacity`` lands on Azure Spot, and, when Azure refuses
too, on the local provider; the receipt shows the chain, and the failover
costs under 5 seconds of control-plane time.

Every backend is the one the provider tests use, on 127.0.0.1, through the
real SDKs (nothing patched):

* **aws**: moto's EC2 (``ThreadedMotoServer``) behind the recording proxy of
  tests/contract/test_aws_provider.py, which answers *every* ``RunInstances``
  with ``InsufficientInstanceCapacity`` (HTTP 500, as EC2 sends it; botocore's
  standard mode retries that once per offer, which is part of the cost we
  time). The target has one instance type in two subnets: two offers.
* **azure**: ``FakeAzureArm`` over TLS, through azure-mgmt-compute; it accepts
  the VM in the first test and refuses it (``AllocationFailed`` or
  ``SkuNotAvailable``, both capacity errors) in the second.
* **local**: the real ``LocalProvider`` with its state under ``tmp_path``. Its
  worker is a sleeper, not the face-swap worker: only the launch is under
  test, and a real worker importing the core would compete for the two cores
  with what is being timed.

The scheduler gets fresh spot prices within the targets' max prices, so the
plan keeps both clouds (a cloud with a max price and no fresh price is
rejected ``stale_price``) and orders them as the rule lists them.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import create_engine

from controlplane.api.views import attempt_json, receipt_json
from controlplane.domain import (
    AttemptState,
    DataSensitivity,
    SignalSample,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.policy import Policy, parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler
from controlplane.store import Event, Store, task_costs, upgrade
from providers.aws import AwsSpotProvider
from providers.azure import AzureSpotProvider, vm_name
from providers.base import BackendState
from providers.bootstrap import LABEL_TASK
from providers.local import LocalProvider
from tests.contract.test_aws_provider import AMI, IMAGE, PROFILE, REGION, _Ec2Proxy, ec2
from tests.contract.test_azure_provider import SETTINGS as AZURE_SETTINGS
from tests.contract.test_azure_provider import SIZE, leftovers, new_provider
from tests.fakes.azure_arm import FakeAzureArm
from tests.support.aws import isolate_aws_environment
from tests.support.loopback import serving

pytestmark = pytest.mark.timeout(120)

AWS_TYPE = "g4dn.xlarge"
#: the issue's bound on the failover, in seconds of control-plane time (and of wall time here)
FAILOVER_BUDGET_S = 5.0
# a worker that waits to be cancelled ("--spec PATH" lands in $0 and $1)
SLEEPER = ["sh", "-c", "exec sleep 60"]


# --------------------------------------------------------------------------- servers and environment


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials only; nothing of the developer's AWS setup or proxies is read (as in the AWS tests)."""
    isolate_aws_environment(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        if server._server is not None:  # stop() leaves the listening socket open
            server._server.server_close()


@dataclass(frozen=True)
class Backends:
    proxy: _Ec2Proxy
    moto_url: str
    arm: FakeAzureArm
    policy: Policy
    aws: AwsSpotProvider
    azure: AzureSpotProvider
    local: LocalProvider


def policy_for(subnets: list[str], security_group: str) -> Policy:
    """Three targets, tried in this order for a public task: EC2 Spot, Azure Spot, this machine."""
    return parse_policy(
        {
            "targets": [
                {
                    "name": "aws-spot",
                    "provider": "aws",
                    "storage": {"uri": "s3://fp-work/aws/"},
                    "private": False,
                    "regions": [REGION],
                    "instance_types": [AWS_TYPE],
                    "max_price_usd_h": 0.6,
                    "settings": {
                        "image_id": AMI,
                        "subnet_ids": subnets,
                        "security_group_ids": [security_group],
                        "iam_instance_profile": PROFILE,
                    },
                },
                {
                    "name": "azure-eastus",
                    "provider": "azure",
                    "storage": {"uri": "az://fpwork/work/"},
                    "private": False,
                    "regions": ["eastus"],
                    "instance_types": [SIZE],
                    "max_price_usd_h": 0.42,
                    "settings": AZURE_SETTINGS,
                },
                {"name": "local", "provider": "local", "private": True, "settings": {"slots": 1}},
            ],
            "rules": [{"name": "clouds-then-home", "targets": ["aws-spot", "azure-eastus", "local"]}],
        }
    )


@pytest.fixture
def backends(moto_url: str, tmp_path: Path) -> Iterator[Backends]:
    client = ec2(moto_url)
    # moto's default VPC: two subnets (by zone) and the default security group; the profile the target names
    subnets = sorted(client.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[:2]
    group = client.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    iam = boto3.client(
        "iam", region_name=REGION, endpoint_url=moto_url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_instance_profile(InstanceProfileName=PROFILE)
    policy = policy_for([s["SubnetId"] for s in subnets], group)

    with serving(_Ec2Proxy(moto_url)) as proxy:
        # EC2 has no capacity for anything: every offer of every launch is refused, as EC2 does (HTTP 500)
        proxy.refuse("RunInstances", "InsufficientInstanceCapacity", status=500)
        arm = FakeAzureArm(cert_dir=tmp_path / "arm-tls").start()
        aws = AwsSpotProvider(
            lambda: policy.targets, image=IMAGE, owner=f"chain-{uuid.uuid4().hex[:10]}", endpoint_url=proxy.url
        )
        azure = new_provider(arm, lambda: policy.targets)
        local = LocalProvider(tmp_path / "local-state", 1, SLEEPER, term_grace_seconds=5.0)
        try:
            yield Backends(proxy, moto_url, arm, policy, aws, azure, local)
        finally:
            # the local worker is a real process group: stop it whatever the test did
            for owned in local.list_owned():
                local.cancel(owned.attempt_id)
            aws.close()
            azure.close()
            arm.stop()


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    yield Store(engine)
    engine.dispose()


def public_task(store: Store) -> Task:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri="https://img.example/in/face.png",
            target_uri="https://img.example/in/target.png",
            output_uri="/var/fp/outputs/out/swapped.png",
            data_sensitivity=DataSensitivity.PUBLIC,
        ),
        request_hash="h-chain",
    )
    return task


def scheduler_for(store: Store, b: Backends) -> Scheduler:
    def prices() -> dict[str, SignalSample]:
        # fresh spot prices within both max prices, so that neither cloud is rejected stale_price
        now = datetime.now(UTC)
        return {
            f"spot_price/{key}": SignalSample(
                source="spot_price", key=key, value=value, observed_at=now, ttl_seconds=600
            )
            for key, value in ((f"aws/{REGION}/{AWS_TYPE}", 0.21), (f"azure/eastus/{SIZE}", 0.16))
        }

    return standalone_scheduler(
        store=store,
        policy=lambda: b.policy,
        providers={"aws": b.aws, "azure": b.azure, "local": b.local},
        callback_base="http://127.0.0.1:9",
        scheduler_id="chain-test",
        signals=prices,
    )


@dataclass(frozen=True)
class Timed:
    claimed: int
    wall_s: float
    process_cpu_s: float
    thread_cpu_s: float


def place(scheduler: Scheduler) -> Timed:
    """``place_batch`` with its wall time and CPU time.

    ``process_time`` counts every thread of this process, so it also holds
    the in-process fakes answering (moto, the proxy, the fake ARM's TLS): an
    upper bound of the control plane's own CPU, which ``thread_time`` gives.
    """
    wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
    claimed = scheduler.place_batch()
    return Timed(claimed, time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - thread)


def chain(events: list[Event], targets: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """The attempt events as (target, kind, new state), in the order they were recorded."""
    return [
        (targets[e.attempt_id], e.kind, e.to_state)
        for e in events
        if e.attempt_id is not None and e.kind in ("attempt.created", "attempt.transition")
    ]


def moto_instances_of_task(moto_url: str, task_id: str) -> list[dict[str, Any]]:
    """Every instance moto holds tagged with the task, in any state (straight to moto, not through the proxy)."""
    pages = ec2(moto_url).describe_instances(Filters=[{"Name": f"tag:{LABEL_TASK}", "Values": [task_id]}])
    return [instance for reservation in pages["Reservations"] for instance in reservation["Instances"]]


def assert_aws_refused_every_offer(b: Backends, task: Task, aws_attempt: str) -> None:
    # both offers (one type x two subnets) were asked for, each with its own token of the attempt
    # (tries() counts tokens: botocore's retry of the HTTP 500 resends the same one)
    tries = b.proxy.tries()
    assert [t["ClientToken"] for t in tries] == [f"{aws_attempt}-0", f"{aws_attempt}-1"]
    assert {t["InstanceType"] for t in tries} == {AWS_TYPE}
    assert len({t["SubnetId"] for t in tries}) == 2
    assert all(t["InstanceMarketOptions.MarketType"] == "spot" for t in tries)
    assert moto_instances_of_task(b.moto_url, task.id) == []
    assert b.aws.list_owned() == []


def assert_fast(timed: Timed) -> None:
    print(
        f"place_batch: wall {timed.wall_s:.3f} s, process CPU {timed.process_cpu_s:.3f} s, "
        f"control-plane thread CPU {timed.thread_cpu_s:.3f} s"
    )
    assert timed.process_cpu_s < FAILOVER_BUDGET_S, timed
    assert timed.wall_s < FAILOVER_BUDGET_S, timed


# --------------------------------------------------------------------------- the tests


def test_insufficient_capacity_on_aws_lands_on_azure(backends: Backends, store: Store) -> None:
    b = backends
    task = public_task(store)
    timed = place(scheduler_for(store, b))
    assert timed.claimed == 1

    attempts = store.attempts_for(task.id)
    assert [(a.number, a.target, a.provider, a.state) for a in attempts] == [
        (1, "aws-spot", "aws", AttemptState.FAILED),
        (2, "azure-eastus", "azure", AttemptState.LAUNCHING),
    ]
    aws_attempt, azure_attempt = attempts
    assert (aws_attempt.reason or "").startswith("insufficient_capacity: ")
    assert "InsufficientInstanceCapacity" in (aws_attempt.reason or "")
    assert azure_attempt.backend_ref is not None
    assert azure_attempt.backend_ref.endswith(f"/virtualMachines/{vm_name(azure_attempt.id)}")
    assert store.get_task(task.id).state is TaskState.LAUNCHING
    assert_aws_refused_every_offer(b, task, aws_attempt.id)

    # Azure holds exactly the attempt's VM (being created); local was never asked
    assert [vm.name for vm in b.arm.vms()] == [vm_name(azure_attempt.id)]
    assert b.local.list_owned() == []

    targets = {a.id: a.target for a in attempts}
    assert chain(store.list_events(task.id), targets) == [
        ("aws-spot", "attempt.created", "launching"),
        ("aws-spot", "attempt.transition", "failed"),
        ("azure-eastus", "attempt.created", "launching"),
    ]
    [receipt] = store.get_decisions(task.id)
    assert [c.target for c in receipt.candidates] == ["aws-spot", "azure-eastus", "local"]
    assert_fast(timed)

    # the VM would be billed: cancel it, and it goes with its NIC and disk
    b.azure.cancel(azure_attempt.id)
    assert leftovers(b.arm) == []


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AllocationFailed", "Allocation failed. We do not have sufficient capacity for the requested VM size."),
        (
            "SkuNotAvailable",
            f"The requested size for resource 'fp' is currently not available in location 'eastus' for {SIZE}.",
        ),
    ],
)
def test_when_azure_refuses_too_the_task_lands_on_local(
    backends: Backends, store: Store, code: str, message: str
) -> None:
    b = backends
    b.arm.refuse_next_create(code, message)
    task = public_task(store)
    timed = place(scheduler_for(store, b))
    assert timed.claimed == 1

    attempts = store.attempts_for(task.id)
    assert [(a.number, a.target, a.provider, a.state) for a in attempts] == [
        (1, "aws-spot", "aws", AttemptState.FAILED),
        (2, "azure-eastus", "azure", AttemptState.FAILED),
        (3, "local", "local", AttemptState.LAUNCHING),
    ]
    aws_attempt, azure_attempt, local_attempt = attempts
    assert (aws_attempt.reason or "").startswith("insufficient_capacity: ")
    assert "InsufficientInstanceCapacity" in (aws_attempt.reason or "")
    assert (azure_attempt.reason or "").startswith("insufficient_capacity: ")
    assert code in (azure_attempt.reason or "")
    assert (local_attempt.backend_ref or "").startswith("pid:")
    assert store.get_task(task.id).state is TaskState.LAUNCHING

    # nothing left anywhere but on this machine
    assert_aws_refused_every_offer(b, task, aws_attempt.id)
    assert leftovers(b.arm) == []  # the refused VM left no VM, NIC or disk behind
    assert b.azure.list_owned() == []
    azure_puts = [r.path for r in b.arm.requests if r.method == "PUT" and "/virtualMachines/" in r.path]
    assert [path.rsplit("/", 1)[-1] for path in azure_puts] == [vm_name(azure_attempt.id)]

    # the local worker runs the local attempt, with a callback for that attempt only
    [owned] = b.local.list_owned()
    assert (owned.attempt_id, owned.task_id, owned.state) == (local_attempt.id, task.id, BackendState.RUNNING)
    spec = json.loads((b.local.state_dir / local_attempt.id / "spec.json").read_text())
    assert (spec["task_id"], spec["attempt_id"]) == (task.id, local_attempt.id)
    assert spec["callback"]["url"].endswith(f"/v1/attempts/{local_attempt.id}")

    # the events tell the chain, each refusal with its reason
    events = store.list_events(task.id)
    targets = {a.id: a.target for a in attempts}
    assert chain(events, targets) == [
        ("aws-spot", "attempt.created", "launching"),
        ("aws-spot", "attempt.transition", "failed"),
        ("azure-eastus", "attempt.created", "launching"),
        ("azure-eastus", "attempt.transition", "failed"),
        ("local", "attempt.created", "launching"),
    ]
    failed = [e for e in events if e.kind == "attempt.transition" and e.to_state == "failed"]
    assert [e.detail["reason"] for e in failed] == [aws_attempt.reason, azure_attempt.reason]
    assert [e.kind for e in events][:3] == ["task.created", "task.claimed", "decision.recorded"]

    # the receipt (what GET /v1/tasks/{id}/decision answers): one plan, and the attempts down the chain
    receipt = receipt_json(
        store.get_task(task.id),
        task_costs(store.engine, [task.id], now=store.now())[task.id],
        store.get_decisions(task.id),
        [attempt_json(a, store.get_progress(a.id)) for a in store.attempts_for(task.id)],
    )
    [decision] = receipt["decisions"]
    assert [c["target"] for c in decision["candidates"]] == ["aws-spot", "azure-eastus", "local"]
    assert receipt["task"]["cost"]["estimated_usd"] < 0.01  # two launches refused at once, then free local capacity
    assert decision["rejections"] == []
    assert [(a["target"], a["state"], (a["reason"] or "").split(":")[0]) for a in receipt["attempts"]] == [
        ("aws-spot", "failed", "insufficient_capacity"),
        ("azure-eastus", "failed", "insufficient_capacity"),
        ("local", "launching", ""),
    ]
    assert_fast(timed)

    # stop the worker through the provider, as a cancel would
    b.local.cancel(local_attempt.id)
    assert b.local.status(local_attempt.id).state is BackendState.FAILED


def test_the_task_names_the_target_it_landed_on(backends: Backends, store: Store) -> None:
    b = backends
    b.arm.refuse_next_create("AllocationFailed", "Allocation failed. We do not have sufficient capacity.")
    task = public_task(store)
    place(scheduler_for(store, b))
    # the chain itself is the tests above; here only what the task record says about it
    assert [a.target for a in store.attempts_for(task.id)] == ["aws-spot", "azure-eastus", "local"]
    # Task.target: "the target it ran (or is running) on, once placed" (controlplane/domain/task.py)
    assert store.get_task(task.id).target == "local"
    moves = [(e.detail["from"], e.detail["to"]) for e in store.list_events(task.id) if e.kind == "task.retargeted"]
    assert moves == [("aws-spot", "azure-eastus"), ("azure-eastus", "local")]
