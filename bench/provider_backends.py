"""The backends of ``bench.providers``: every provider on a test server on loopback, and a clocked wrapper.

moto's EC2 (and the recording proxy that answers chosen calls with EC2
errors), the fake Azure ARM over TLS, kmock for Kubernetes, the real local
provider (its worker is ``sleep``) and the no-op baseline, all in this
process; :class:`Clocked` notes when each ``launch()`` was called and ended.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.domain import Candidate, Target
from controlplane.policy import Policy, parse_policy
from providers.base import Capacity, LaunchRequest, LaunchResult, Quote

REGION = "us-east-1"
AWS_TYPE = "g4dn.xlarge"
AZURE_REGION = "eastus"
NAMESPACE = "fusionplane"


# ---- a provider with a clock ---------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One ``launch()`` seen by a :class:`Clocked` provider."""

    attempt_id: str
    task_id: str
    target: str
    started: float  # perf_counter at the call
    ended: float  # perf_counter at the return or the raise
    cpu_started: float  # thread_time at the call
    cpu_ended: float  # thread_time at the return or the raise
    error: str | None  # the taxonomy code when it raised


class Clocked:
    """Delegates to a provider and notes each ``launch()``'s start and end (the scheduler sees no difference)."""

    def __init__(self, inner: Any, calls: list[Call]) -> None:
        self.inner, self.calls = inner, calls
        self.name: str = inner.name

    def launch(self, request: LaunchRequest) -> LaunchResult:
        started, cpu = time.perf_counter(), time.thread_time()
        error: str | None = None
        try:
            return self.inner.launch(request)  # type: ignore[no-any-return]
        except Exception as exc:
            error = getattr(exc, "code", type(exc).__name__)
            raise
        finally:
            ended, cpu_ended = time.perf_counter(), time.thread_time()
            self.calls.append(
                Call(
                    request.attempt_id, request.task_id, request.candidate.target, started, ended, cpu, cpu_ended, error
                )
            )

    def capacity(self, target: Target) -> Capacity:
        return self.inner.capacity(target)  # type: ignore[no-any-return]

    def quote(self, candidate: Candidate) -> Quote:
        return self.inner.quote(candidate)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:  # status, cancel, list_owned
        return getattr(self.inner, name)


# ---- the backends --------------------------------------------------------------------------------


@dataclass
class Backends:
    folder: Path
    moto_url: str
    proxy: Any  # tests.contract.test_aws_provider._Ec2Proxy
    arm: Any  # tests.fakes.azure_arm.FakeAzureArm
    cluster: Any  # tests.support.kmock_cluster.KmockCluster
    policy: Policy
    #: provider name -> provider, plus "aws-proxy": the EC2 provider whose calls go through the proxy
    providers: dict[str, Any] = field(default_factory=dict)


def bench_policy(subnets: Sequence[str], security_group: str) -> Policy:
    """One target per backend (and two for the no-op baseline); each scenario's rule orders a few of them."""
    from tests.contract.test_aws_provider import AMI, PROFILE
    from tests.contract.test_azure_provider import SETTINGS as AZURE_SETTINGS
    from tests.contract.test_azure_provider import SIZE

    return parse_policy(
        {
            "targets": [
                {
                    "name": "aws-spot",
                    "provider": "aws",
                    "private": False,
                    "regions": [REGION],
                    "instance_types": [AWS_TYPE],
                    "max_price_usd_h": 0.6,
                    "settings": {
                        "image_id": AMI,
                        "subnet_ids": list(subnets),
                        "security_group_ids": [security_group],
                        "iam_instance_profile": PROFILE,
                    },
                },
                {
                    "name": "azure-eastus",
                    "provider": "azure",
                    "private": False,
                    "regions": [AZURE_REGION],
                    "instance_types": [SIZE],
                    "max_price_usd_h": 0.42,
                    "settings": AZURE_SETTINGS,
                },
                {"name": "onprem", "provider": "kubernetes", "private": True, "settings": {"namespace": NAMESPACE}},
                {"name": "local", "provider": "local", "private": True, "settings": {"slots": 2}},
                # the baseline's two targets: a provider name the no-op provider stands in for
                {"name": "noop-first", "provider": "kubernetes", "private": True},
                {"name": "noop-second", "provider": "kubernetes", "private": True},
            ],
            "rules": [{"name": "default", "targets": ["aws-spot", "azure-eastus", "onprem", "local"]}],
        }
    )


@contextlib.contextmanager
def running_backends(folder: Path) -> Iterator[Backends]:
    """Every server started here is stopped on the way out, and every local worker cancelled."""
    import boto3
    from moto.server import ThreadedMotoServer

    from providers.aws import AwsSpotProvider
    from providers.bootstrap import WorkerImage
    from providers.kubernetes import KubernetesProvider
    from providers.local import LocalProvider
    from providers.noop import NoopProvider
    from tests.contract.test_aws_provider import IMAGE, PROFILE, _Ec2Proxy, ec2
    from tests.contract.test_azure_provider import new_provider
    from tests.fakes.azure_arm import FakeAzureArm
    from tests.support.kmock_cluster import KmockCluster, api_client
    from tests.support.loopback import serving

    with contextlib.ExitStack() as stack:
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()

        @stack.callback
        def _stop_moto() -> None:
            moto.stop()
            if moto._server is not None:  # stop() leaves the listening socket open
                moto._server.server_close()

        host, port = moto.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        client = ec2(moto_url, REGION)
        subnets = sorted(client.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[:2]
        group = client.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
        boto3.client("iam", region_name=REGION, endpoint_url=moto_url).create_instance_profile(
            InstanceProfileName=PROFILE
        )
        policy = bench_policy([s["SubnetId"] for s in subnets], group)

        proxy = stack.enter_context(serving(_Ec2Proxy(moto_url)))
        arm = stack.enter_context(FakeAzureArm(cert_dir=folder / "arm-tls"))
        cluster = stack.enter_context(KmockCluster())
        kube_client = api_client(cluster.url)
        stack.callback(kube_client.close)

        def targets() -> tuple[Target, ...]:
            return policy.targets

        owner = f"bench-{os.getpid()}"
        aws = AwsSpotProvider(targets, image=IMAGE, owner=owner, endpoint_url=moto_url)
        aws_proxy = AwsSpotProvider(targets, image=IMAGE, owner=owner + "-p", endpoint_url=proxy.url)
        azure = new_provider(arm, targets)
        kubernetes = KubernetesProvider(
            targets,
            image=WorkerImage(image="fusionplane-worker:bench-gpu"),
            owner=owner,
            api_client_for=lambda _target: kube_client,
        )
        # a worker that waits to be cancelled ("--spec PATH" lands in $0 and $1)
        local = LocalProvider(folder / "local-state", 2, ["sh", "-c", "exec sleep 120"], term_grace_seconds=5.0)
        for closing in (aws, aws_proxy, azure):
            stack.callback(closing.close)

        @stack.callback
        def _stop_local_workers() -> None:
            for owned in local.list_owned():
                with contextlib.suppress(Exception):  # best effort on the way out; the rest still stop
                    local.cancel(owned.attempt_id)

        yield Backends(
            folder=folder,
            moto_url=moto_url,
            proxy=proxy,
            arm=arm,
            cluster=cluster,
            policy=policy,
            providers={
                "noop": NoopProvider(name="kubernetes", record_calls=False),
                "aws": aws,
                "aws-proxy": aws_proxy,
                "azure": azure,
                "kubernetes": kubernetes,
                "local": local,
            },
        )
