"""Pods on spot node pools fail over like spot VMs, through the real scheduler, store and provider on kmock.

Two pool targets on one emulated cluster: an EKS Karpenter spot pool (first
in the rule, cheaper) and an AKS spot pool, both with their work in one S3
bucket so a video's checkpoint is the same folder wherever it runs. The
tests play the cloud: a reclaimed spot node (the pod disrupted, then gone
with its node, the Job failed), and an autoscaler that will not bring a
node. The attempt ends ``preempted`` or ``failed`` with the capacity reason,
the store's breaker evidence counts it against the AWS offer, and the task
runs on the AKS pool next, resuming from the same checkpoint; ``fusionctl
explain`` shows the prices and the reasons.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import kubernetes
import pytest
from click.testing import CliRunner

from controlplane.api.app import create_app
from controlplane.api.auth import TokenRegistry, create_token
from controlplane.cli.tasks import COMMANDS
from controlplane.config import Settings
from controlplane.domain import AttemptState, SignalSample, TaskKind, TaskSpec, TaskState
from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.runtime.pool_offers import merge_pool_offers, pool_clouds, summed
from controlplane.runtime.signals import store_sources
from controlplane.scheduler import Scheduler
from controlplane.signals.base import wanted_from_targets
from controlplane.store import Store, cloud_spend_today, make_engine, offer_outcomes, upgrade
from providers.bootstrap import WorkerImage, resource_name
from providers.kubernetes import KubernetesProvider
from tests.contract.test_kubernetes_provider import JOB_FAILED, NAMESPACE, _drain, set_job_status, stamp, start_pod
from tests.support.asgi_server import serving
from tests.support.kmock_cluster import JOBS, SECRETS, KmockCluster, api_client
from tests.support.storage import offline_host_resolver, write_storage

pytestmark = pytest.mark.timeout(60)

AKS_NAMESPACE = "fp-aks"
EKS_TYPES = ["g5.xlarge", "g6.xlarge"]
AKS_SIZE = "Standard_NC4as_T4_v3"
STORE = {"uri": "s3://fp-work/pods/"}
POLICY_DOCUMENT: dict[str, Any] = {
    "targets": [
        {
            "name": "eks-spot",
            "provider": "kubernetes",
            "private": False,
            "max_price_usd_h": 1.0,
            "cloud": {
                "provider": "aws",
                "region": "us-east-1",
                "instance_types": EKS_TYPES,
                "capacity_wait_seconds": 60,
            },
            "settings": {"namespace": NAMESPACE},
            "storage": STORE,
        },
        {
            "name": "aks-spot",
            "provider": "kubernetes",
            "private": False,
            "max_price_usd_h": 1.0,
            "cloud": {"provider": "azure", "region": "eastus", "instance_types": [AKS_SIZE]},
            "settings": {"namespace": AKS_NAMESPACE},
            "storage": STORE,
        },
    ],
    "rules": [{"name": "pods", "targets": ["eks-spot", "aks-spot"]}],
}
POLICY = parse_policy(POLICY_DOCUMENT)
FUSIONCTL = click.Group("fusionctl", commands=COMMANDS)


@dataclass
class World:
    store: Store
    cluster: KmockCluster
    client: kubernetes.client.ApiClient
    scheduler: Scheduler
    now: list[datetime]
    prices: dict[str, float]

    def advance(self, seconds: float) -> None:
        self.now[0] += timedelta(seconds=seconds)

    def open_breakers(self) -> None:
        """What the breaker poller publishes once it has counted the pool's failures (see the evidence test)."""
        for instance_type in EKS_TYPES:
            self.prices[f"breaker/aws/us-east-1/{instance_type}"] = 1.0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    now = [datetime.now(UTC).replace(microsecond=0)]
    store = Store(engine, clock=lambda: now[0])
    prices = {
        "spot_price/aws/us-east-1/g5.xlarge": 0.45,
        "spot_price/aws/us-east-1/g6.xlarge": 0.52,
        f"spot_price/azure/eastus/{AKS_SIZE}": 0.21,
    }

    def signals() -> dict[str, SignalSample]:
        samples = {}
        for name, value in prices.items():
            source, _, key = name.partition("/")
            samples[name] = SignalSample(source=source, key=key, value=value, observed_at=now[0], ttl_seconds=600)
        return samples

    with KmockCluster() as cluster:
        client = api_client(cluster.url)
        kubernetes_provider = KubernetesProvider(
            lambda: POLICY.targets,
            image=WorkerImage(image="fusionplane-worker:test-gpu"),
            owner="pool-test",
            api_client_for=lambda _target: client,
            clock=lambda: now[0],
        )
        scheduler = standalone_scheduler(
            store=store,
            policy=lambda: POLICY,
            providers={"kubernetes": kubernetes_provider},
            callback_base="https://cp.example",
            scheduler_id="test",
            signals=signals,
            clock=lambda: now[0],
        )
        try:
            yield World(store, cluster, client, scheduler, now, prices)
        finally:
            client.close()
            engine.dispose()


def submit(store: Store) -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.VIDEO,
            source_uri="https://img.example/in/face.png",
            target_uri="https://img.example/in/clip.mp4",
            output_uri="s3://fp-work/out/acme/swapped.mp4",
        ),
        request_hash="h",
    )
    return task.id


def checkpoint_of(world: World, attempt_id: str) -> Any:
    [secret] = [s for s in world.cluster.objects(SECRETS) if s["metadata"]["name"] == resource_name("fp", attempt_id)]
    return json.loads(base64.b64decode(secret["data"]["spec.json"]))["checkpoint"]


def explain(world: World, tmp_path: Path, task_id: str) -> str:
    """``fusionctl explain TASK`` against the real API on loopback, as an operator."""
    tokens_file = tmp_path / "tokens.json"
    token = create_token(tokens_file, tenant="ops", role="operator")
    settings = Settings(
        var_dir=tmp_path,
        input_roots=(tmp_path,),
        output_root=tmp_path / "outputs",
        insecure_dev=False,
        tokens_file=tokens_file,
        storage_file=write_storage(tmp_path / "storage.json", {"ops": {"web_hosts": ["*"]}}),
    )
    app, _ = create_app(
        settings=settings,
        store=world.store,
        tokens=TokenRegistry.load(tokens_file),
        resolve_host=offline_host_resolver,
    )
    with serving(app) as url:
        env = {"FUSIONPLANE_URL": url, "FUSIONPLANE_TOKEN": token}
        result = CliRunner().invoke(FUSIONCTL, ["explain", task_id], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_reclaimed_spot_node_fails_the_pod_over_to_the_next_pool_resuming_its_checkpoint(
    world: World, tmp_path: Path
) -> None:
    task_id = submit(world.store)
    assert world.scheduler.place_batch() == 1
    [first] = world.store.attempts_for(task_id)
    assert (first.target, first.provider, first.instance_type) == ("eks-spot", "kubernetes", "g5.xlarge")
    [job] = world.cluster.objects(JOBS, NAMESPACE)
    assert job["spec"]["template"]["spec"]["nodeSelector"]["karpenter.sh/capacity-type"] == "spot"

    pod = start_pod(world.client, first.id, {"phase": "Running"})
    assert world.scheduler.follow() >= 0
    assert world.store.get_attempt(first.id).state is AttemptState.RUNNING

    # the spot interruption: Karpenter drains the node, the pod fails disrupted and goes with the node
    core = kubernetes.client.CoreV1Api(world.client)
    disrupted = {
        "phase": "Failed",
        "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}],
    }
    _drain(core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": disrupted}, _preload_content=False))
    _drain(core.delete_namespaced_pod(pod, NAMESPACE, _preload_content=False))
    set_job_status(world.client, first.id, JOB_FAILED)
    world.open_breakers()
    world.advance(5)
    world.scheduler.follow()

    ended = world.store.get_attempt(first.id)
    assert ended.state is AttemptState.PREEMPTED
    assert (ended.reason or "").startswith("pod gone with its aws spot node (reclaimed)")
    assert world.store.get_task(task_id).state is TaskState.QUEUED
    [event] = [e for e in world.store.list_events(task_id) if e.kind == "attempt.failover"]
    assert (event.detail["trigger"], event.detail["reason"]) == ("preempted", ended.reason)

    world.advance(5)  # past the failover backoff
    assert world.scheduler.place_batch() == 1
    second = world.store.attempts_for(task_id)[1]
    assert (second.target, second.instance_type, second.state) == ("aks-spot", AKS_SIZE, AttemptState.LAUNCHING)
    [aks_job] = world.cluster.objects(JOBS, AKS_NAMESPACE)
    assert aks_job["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.azure.com/scalesetpriority"] == "spot"
    # resume: the second pod's spec names the first one's checkpoint folder in the shared bucket
    assert (
        checkpoint_of(world, first.id)
        == checkpoint_of(world, second.id)
        == (f"s3://fp-work/pods/acme/{task_id}/checkpoint/")
    )

    # the daily budget counts the pod's node at its receipt's price: 5 s at 0.45 $/h, the second pod just started
    budgeted = parse_policy({**POLICY_DOCUMENT, "thresholds": {"daily_budget_usd": 100}})
    budget = store_sources(world.store, lambda: budgeted)[1]
    polled = budget.poll(wanted_from_targets(budgeted.targets), timeout_s=5.0, clock=lambda: world.now[0])
    spend = {sample.key: sample.value for sample in polled.samples}
    assert spend["spent_today_usd"] == round(0.45 * 5 / 3600, 4)  # the sample keeps 4 decimals
    assert spend["unpriced_attempts_today"] == 0
    exact = cloud_spend_today(world.store.engine, now=world.now[0], targets=["eks-spot", "aks-spot"])
    assert exact.total_usd == pytest.approx(0.45 * 5 / 3600)
    assert cloud_spend_today(world.store.engine, now=world.now[0]).attempts == 0  # VMs only: none here

    shown = explain(world, tmp_path, task_id)
    assert "eks-spot (kubernetes, cloud, region us-east-1, type g5.xlarge, expected $0.45/h, max $1/h, spot)" in shown
    assert "spot price aws/us-east-1/g5.xlarge 0.4500 USD/h <= max 1" in shown
    assert "aks-spot (kubernetes, cloud, region eastus, type Standard_NC4as_T4_v3, expected $0.21/h" in shown
    assert "breaker_open" in shown
    assert "pod gone with its aws spot node (reclaimed)" in shown


def test_a_pod_the_pool_cannot_get_capacity_for_fails_over_and_counts_against_the_offer(world: World) -> None:
    task_id = submit(world.store)
    assert world.scheduler.place_batch() == 1
    [first] = world.store.attempts_for(task_id)
    assert first.target == "eks-spot"
    pending = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
                "lastTransitionTime": stamp(world.now[0]),
            }
        ],
    }
    pod = start_pod(world.client, first.id, pending)
    world.advance(30)
    world.scheduler.follow()
    assert world.store.get_attempt(first.id).state is AttemptState.LAUNCHING  # within the pool's 60 s

    core = kubernetes.client.CoreV1Api(world.client)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "no-scale-up", "namespace": NAMESPACE},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": NAMESPACE},
        "reason": "NotTriggerScaleUp",
        "type": "Warning",
        "message": "pod didn't trigger scale-up: 1 max node group size reached",
        "lastTimestamp": stamp(world.now[0]),
    }
    _drain(core.create_namespaced_event(NAMESPACE, event, _preload_content=False))
    world.advance(40)
    world.scheduler.follow()

    ended = world.store.get_attempt(first.id)
    assert ended.state is AttemptState.FAILED
    assert (ended.reason or "").startswith("insufficient_capacity: no aws spot node came in us-east-1 within 60 s")
    assert world.cluster.objects(JOBS, NAMESPACE) == []  # cancelled before the failover
    [event] = [e for e in world.store.list_events(task_id) if e.kind == "attempt.failover"]
    assert event.detail["trigger"] == "insufficient_capacity"
    assert event.detail["reason"] == ended.reason
    # the breaker's evidence: the refusal counts against the AWS offer, like an EC2 InsufficientInstanceCapacity
    found = offer_outcomes(
        world.store.engine, since=world.now[0] - timedelta(hours=1), providers=("aws", "azure", "kubernetes")
    )
    merged = merge_pool_offers(found, pool_clouds(POLICY.targets), summed)
    assert merged[("aws", "us-east-1", "g5.xlarge")].capacity_errors == 1
    # ... and the breaker poller serve runs opens that offer's breaker on it (one attempt is enough here)
    strict = parse_policy({**POLICY_DOCUMENT, "thresholds": {"breaker_min_attempts": 1}})
    breaker = store_sources(world.store, lambda: strict)[0]
    polled = breaker.poll(wanted_from_targets(strict.targets), timeout_s=5.0, clock=lambda: world.now[0])
    values = {f"{sample.source}/{sample.key}": sample.value for sample in polled.samples}
    assert values["breaker/aws/us-east-1/g5.xlarge"] == 1.0

    world.open_breakers()
    world.advance(5)
    assert world.scheduler.place_batch() == 1
    second = world.store.attempts_for(task_id)[1]
    assert (second.target, second.state) == ("aks-spot", AttemptState.LAUNCHING)
