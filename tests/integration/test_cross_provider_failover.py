"""A capacity error on one backend moves the task to the next in seconds, through the real executor.

The plan puts an Azure Spot target first and a private Kubernetes cluster
second (a public task may use both). Azure (the fake ARM, through
azure-mgmt-compute) refuses the VM with AllocationFailed; the scheduler
records the failed attempt and launches a Job on the cluster (kmock, through
the kubernetes client). Nothing is left behind in Azure, and the receipt and
events tell the story.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from controlplane.domain import AttemptState, DataSensitivity, SignalSample, TaskKind, TaskSpec, TaskState
from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.store import Store, upgrade
from providers.bootstrap import WorkerImage
from providers.kubernetes import KubernetesProvider
from tests.contract.test_azure_provider import SETTINGS as AZURE_SETTINGS
from tests.contract.test_azure_provider import SIZE, leftovers, new_provider
from tests.fakes.azure_arm import FakeAzureArm
from tests.support.kmock_cluster import JOBS, KmockCluster, api_client

pytestmark = pytest.mark.timeout(60)

POLICY = parse_policy(
    {
        "targets": [
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
            {
                "name": "onprem",
                "provider": "kubernetes",
                "storage": {"uri": "s3://fp-work/k8s/"},
                "private": True,
                "settings": {"namespace": "gpu"},
            },
        ],
        "rules": [{"name": "cloud-first", "targets": ["azure-eastus", "onprem"]}],
    }
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    yield Store(engine)
    engine.dispose()


def test_allocation_failure_on_azure_moves_the_task_to_kubernetes_in_seconds(store: Store, tmp_path: Path) -> None:
    arm = FakeAzureArm(cert_dir=tmp_path / "arm-tls").start()
    try:
        with KmockCluster() as cluster:
            client = api_client(cluster.url)
            azure = new_provider(arm, lambda: POLICY.targets)
            kubernetes = KubernetesProvider(
                lambda: POLICY.targets,
                image=WorkerImage(image="fusionplane-worker:test-gpu"),
                owner="failover-test",
                api_client_for=lambda _target: client,
            )
            task, _ = store.create_task(
                spec=TaskSpec(
                    tenant="acme",
                    kind=TaskKind.IMAGE,
                    source_uri="https://img.example/in/face.png",
                    target_uri="https://img.example/in/target.png",
                    output_uri="/var/fp/outputs/out/swapped.png",
                    data_sensitivity=DataSensitivity.PUBLIC,
                ),
                request_hash="h",
            )
            arm.refuse_next_create("AllocationFailed", "Allocation failed. We do not have sufficient capacity.")
            scheduler = standalone_scheduler(
                store=store,
                policy=lambda: POLICY,
                providers={"azure": azure, "kubernetes": kubernetes},
                callback_base="https://cp.example",
                scheduler_id="test",
                # a fresh spot price within the max, so the plan puts Azure first
                signals=lambda: {
                    f"spot_price/azure/eastus/{SIZE}": SignalSample(
                        source="spot_price",
                        key=f"azure/eastus/{SIZE}",
                        value=0.16,
                        observed_at=datetime.now(UTC),
                        ttl_seconds=600,
                    )
                },
            )
            started = time.monotonic()
            assert scheduler.place_batch() == 1
            elapsed = time.monotonic() - started

            attempts = store.attempts_for(task.id)
            assert [(a.target, a.state) for a in attempts] == [
                ("azure-eastus", AttemptState.FAILED),
                ("onprem", AttemptState.LAUNCHING),
            ]
            assert "insufficient_capacity" in (attempts[0].reason or "")
            assert store.get_task(task.id).state is TaskState.LAUNCHING
            assert elapsed < 10.0, elapsed  # seconds, not minutes: no SDK retry loop between backends
            [job] = cluster.objects(JOBS, "gpu")
            assert job["metadata"]["labels"]["fusionplane.io/attempt-id"] == attempts[1].id
            assert leftovers(arm) == []  # the refused VM left no NIC or disk behind
            receipt = store.get_decisions(task.id)[-1]
            assert [c.target for c in receipt.candidates] == ["azure-eastus", "onprem"]
            azure.close()
    finally:
        arm.stop()
