"""AwsSpotProvider against moto in server mode, through the real boto3 client.

Two servers, both on 127.0.0.1:

* **moto** (``ThreadedMotoServer``, one per module). It keeps real EC2
  state: instances, tags, user data, launch templates, IAM instance
  profiles. Its limits, found in moto 5.2.5's ``moto/ec2``: it ignores
  ``ClientToken`` (every call starts a new instance; no idempotency, and the
  ``client-token`` filter answers HTTP 500), stores only ``MarketType`` of
  ``InstanceMarketOptions`` (``InstanceLifecycle: spot``), never refuses a
  launch for capacity or price, and has no error injection for EC2. Spot
  interruptions and self-shutdowns are simulated the moto way, on its backend
  objects: ``Instance.terminate()`` (moto's own state change: NICs, volumes)
  and then ``Instance.state_reason = StateReason(...)``, which moto's
  DescribeInstances serialises as ``StateReason``.
* **an EC2 proxy** (:class:`_Ec2Proxy`, in this file) in front of moto. It
  records every request's query parameters as sent on the wire (so the tests
  see ``MaxPrice``, ``ClientToken``, the tag specifications and the base64
  user data exactly as EC2 would), forwards them to moto, and answers
  chosen calls with an EC2 XML error instead (``InsufficientInstanceCapacity``
  for one instance type, ``VcpuLimitExceeded``, throttling, ...), which is
  how capacity failover and the error mapping are tested.

Nothing in boto3 or botocore is patched: requests are signed, sent over a
socket and parsed by botocore. Every test uses its own ``owner`` tag, so
tests sharing the moto server never see each other's instances.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason

from controlplane.domain import (
    ON_DEMAND,
    Candidate,
    InsufficientCapacity,
    InvalidSpec,
    PriceTooHigh,
    ProviderError,
    QuotaExceeded,
    Target,
    Throttled,
    Unavailable,
)
from controlplane.domain.worker_spec import parse_worker_spec
from providers.aws import TAG_CANCELLED, AwsSpotProvider, client_token
from providers.base import BackendState, LaunchRequest, Provider, Quote
from providers.bootstrap import (
    LABEL_ATTEMPT,
    LABEL_MARKET,
    LABEL_OWNER,
    LABEL_TASK,
    SELF_SHUTDOWN_GRACE_S,
    SELF_SHUTDOWN_REASON,
    SPEC_PATH,
    WorkerImage,
    cloud_init,
    spec_json,
)
from tests.contract.provider_contract import ProviderContract, candidate_for, worker_spec
from tests.support.aws import isolate_aws_environment, moto_server
from tests.support.loopback import SilentServer, serving

pytestmark = pytest.mark.timeout(60)

REGION, OTHER_REGION = "us-east-1", "eu-west-1"
# moto does not check AMIs unless asked (MOTO_ENABLE_AMI_VALIDATION), so any well-formed id works
AMI = "ami-0fusionplane0test"
IMAGE = WorkerImage(image="registry.example/fusionplane-worker:0.1.0-gpu")
PROFILE = "fusionplane-worker"
SECRET = "att_s3cr3t-callback-token-0123456789abcdefghij"


# --------------------------------------------------------------------------- environment and servers


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials from the environment only; nothing of the developer's AWS setup is read."""
    isolate_aws_environment(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


def ec2(url: str, region: str = REGION) -> Any:
    """A plain boto3 client for looking at moto's state (not the provider's)."""
    return boto3.client(
        "ec2", region_name=region, endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@dataclass(frozen=True)
class Network:
    subnets: tuple[tuple[str, str], ...]  # (subnet id, zone), by zone
    security_group: str


@pytest.fixture(scope="module")
def network(moto_url: str) -> Network:
    """us-east-1's default VPC in moto: subnets, the default security group, and an instance profile."""
    client = ec2(moto_url)
    subnets = sorted(
        ((s["SubnetId"], s["AvailabilityZone"]) for s in client.describe_subnets()["Subnets"]), key=lambda s: s[1]
    )
    group = client.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    iam = boto3.client(
        "iam", region_name=REGION, endpoint_url=moto_url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_instance_profile(InstanceProfileName=PROFILE)
    return Network(subnets=tuple(subnets[:2]), security_group=group)


def moto_instance(instance_id: str, region: str = REGION) -> Any:
    """moto's own Instance object (ThreadedMotoServer serves the backends of this process)."""
    return ec2_backends[DEFAULT_ACCOUNT_ID][region].get_instance(instance_id)


def interrupt(instance_id: str, code: str, message: str, region: str = REGION) -> None:
    """End an instance as EC2 would, with ``code`` as its StateReason."""
    instance = moto_instance(instance_id, region)
    instance.terminate()
    instance.state_reason = StateReason(f"{code}: {message}", code)


def instance_id_of(ref: str) -> str:
    provider, region, instance_id = ref.split(":")
    assert provider == "aws"
    assert region in (REGION, OTHER_REGION)
    return instance_id


def instances_of(url: str, attempt_id: str, owner: str, region: str = REGION) -> list[dict[str, Any]]:
    filters = [
        {"Name": f"tag:{LABEL_ATTEMPT}", "Values": [attempt_id]},
        {"Name": f"tag:{LABEL_OWNER}", "Values": [owner]},
    ]
    pages = ec2(url, region).describe_instances(Filters=filters)["Reservations"]
    return [instance for reservation in pages for instance in reservation["Instances"]]


# --------------------------------------------------------------------------- the EC2 proxy

_REGION_IN_AUTH = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/ec2/aws4_request")


@dataclass
class _Rule:
    """Answer requests of ``action`` whose parameters include ``where`` with ``status``/``body``."""

    action: str
    status: int
    body: bytes
    where: dict[str, str] = field(default_factory=dict)
    region: str | None = None
    #: how many more requests it answers (None: all)
    times: int | None = None

    def matches(self, region: str, params: dict[str, str]) -> bool:
        if params.get("Action") != self.action or (self.region is not None and region != self.region):
            return False
        return all(params.get(key) == value for key, value in self.where.items())


@dataclass(frozen=True)
class _Seen:
    region: str
    params: dict[str, str]
    raw: bytes

    @property
    def action(self) -> str:
        return self.params.get("Action", "")


def ec2_error(code: str, message: str = "refused by the test") -> bytes:
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{escape(code)}</Code>"
        f"<Message>{escape(message)}</Message></Error></Errors><RequestID>req-test</RequestID></Response>"
    ).encode()


_EMPTY_DESCRIBE = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    b"<requestId>req-empty</requestId><reservationSet/></DescribeInstancesResponse>"
)


class _Ec2Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[_Rule] = []
        self.seen: list[_Seen] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def refuse(
        self,
        action: str,
        code: str,
        *,
        status: int = 400,
        where: dict[str, str] | None = None,
        region: str | None = None,
        times: int | None = None,
    ) -> None:
        self.rules.append(_Rule(action, status, ec2_error(code), dict(where or {}), region, times))

    def calls(self, action: str) -> list[_Seen]:
        with self.lock:
            return [seen for seen in self.seen if seen.action == action]

    def tries(self) -> list[dict[str, str]]:
        """RunInstances requests, one per ClientToken (botocore's retry of a 5xx resends the same one)."""
        distinct: dict[str, dict[str, str]] = {}
        for seen in self.calls("RunInstances"):
            distinct.setdefault(seen.params["ClientToken"], seen.params)
        return list(distinct.values())


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _Ec2Proxy
    protocol_version = "HTTP/1.0"  # one request per connection: no handler thread outlives a test

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        params = {key: values[0] for key, values in parse_qs(raw.decode(), keep_blank_values=True).items()}
        found = _REGION_IN_AUTH.search(self.headers.get("Authorization", ""))
        region = found.group(1) if found else "?"
        with self.server.lock:
            self.server.seen.append(_Seen(region, params, raw))
            rule = next((r for r in self.server.rules if r.matches(region, params)), None)
            if rule is not None and rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self.server.rules.remove(rule)
        if rule is not None:
            self._send(rule.status, rule.body, "text/xml")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=20)
        try:
            upstream.request("POST", self.path, body=raw, headers=headers)
            answer = upstream.getresponse()
            self._send(answer.status, answer.read(), answer.getheader("Content-Type", "text/xml"))
        finally:
            upstream.close()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def proxy(moto_url: str) -> Iterator[_Ec2Proxy]:
    with serving(_Ec2Proxy(moto_url)) as server:
        yield server


# --------------------------------------------------------------------------- providers and requests


def aws_target(network: Network | None = None, **overrides: Any) -> Target:
    settings: dict[str, Any] = {"image_id": AMI}
    if network is not None:
        settings |= {
            "subnet_ids": [subnet for subnet, _ in network.subnets],
            "security_group_ids": [network.security_group],
            "iam_instance_profile": PROFILE,
        }
    settings |= overrides.pop("settings", {})
    fields: dict[str, Any] = {
        "name": "aws-spot",
        "provider": "aws",
        "private": False,
        "regions": (REGION,),
        "instance_types": ("g4dn.xlarge", "g5.xlarge"),
        "max_price_usd_h": 0.6,
        "settings": settings,
    }
    return Target(**(fields | overrides))


def request(
    attempt_id: str,
    target: Target,
    *,
    task_id: str = "tsk-aws",
    region: str | None = None,
    instance_type: str | None = None,
    no_max_price: bool = False,
    callback: bool = True,
    **spec_overrides: Any,
) -> LaunchRequest:
    base = candidate_for(target)
    candidate = Candidate(
        target=base.target,
        provider=base.provider,
        private=base.private,
        region=region or base.region,
        instance_type=instance_type or base.instance_type,
        max_price_usd_h=None if no_max_price else base.max_price_usd_h,
        market=base.market,
    )
    if callback:
        spec_overrides.setdefault("callback", {"url": f"https://cp.example/v1/attempts/{attempt_id}", "token": SECRET})
    return LaunchRequest(
        attempt_id=attempt_id,
        task_id=task_id,
        candidate=candidate,
        worker_spec=parse_worker_spec(worker_spec(attempt_id, task_id, **spec_overrides)),
    )


MakeProvider = Callable[..., AwsSpotProvider]


@pytest.fixture
def make_provider() -> Iterator[MakeProvider]:
    """Providers with a fresh owner each (unless given); their clients are closed at the end."""
    made: list[AwsSpotProvider] = []

    def make(url: str, *targets: Target, **kwargs: Any) -> AwsSpotProvider:
        kwargs.setdefault("owner", f"test-{uuid.uuid4().hex[:10]}")
        kwargs.setdefault("image", IMAGE)
        kwargs.setdefault("targets", targets)
        provider = AwsSpotProvider(endpoint_url=url, **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


# --------------------------------------------------------------------------- the contract


class TestAwsSpotProvider(ProviderContract):
    """The whole contract against moto: launch, adopt, status, cancel, list_owned."""

    target = Target(
        name="aws-contract",
        provider="aws",
        private=False,
        regions=(REGION,),
        zones=("us-east-1a", "us-east-1b"),
        instance_types=("g4dn.xlarge", "g5.xlarge"),
        max_price_usd_h=0.6,
        settings={"image_id": AMI},
    )

    @pytest.fixture(autouse=True)
    def _moto(self, moto_url: str) -> None:
        self.url = moto_url

    def make_provider(self, tmp_path: Path) -> Provider:
        self.owner = f"contract-{uuid.uuid4().hex[:10]}"
        return AwsSpotProvider(targets=[self.target], image=IMAGE, owner=self.owner, endpoint_url=self.url)

    def resources_of(self, provider: Provider, attempt_id: str) -> int:
        # EC2 itself, any state: a second instance would show here even if list_owned hid it
        return len(instances_of(self.url, attempt_id, self.owner))


class TestAwsOnDemandProvider(TestAwsSpotProvider):
    """The same contract for on-demand candidates (``market: on-demand``): nothing of it depends on the market."""

    target = dataclasses.replace(TestAwsSpotProvider.target, name="aws-on-demand", market=ON_DEMAND)


# --------------------------------------------------------------------------- the request


def test_run_instances_request_is_a_one_time_spot_launch_with_ids_only_in_tags(
    proxy: _Ec2Proxy, network: Network, make_provider: MakeProvider, moto_url: str
) -> None:
    target = aws_target(network)
    provider = make_provider(proxy.url, target)
    launch = dataclasses.replace(request("att_req1", target, task_id="tsk_req1"), deadline_seconds=570)

    result = provider.launch(launch)

    assert not result.adopted
    assert result.backend_ref.startswith(f"aws:{REGION}:i-")
    [sent] = proxy.calls("RunInstances")
    p = sent.params
    assert p["InstanceMarketOptions.MarketType"] == "spot"
    assert p["InstanceMarketOptions.SpotOptions.SpotInstanceType"] == "one-time"
    assert p["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"] == "terminate"
    assert p["InstanceMarketOptions.SpotOptions.MaxPrice"] == "0.6"
    assert p["ClientToken"] == "att_req1-0" == client_token("att_req1", 0)
    assert (p["MinCount"], p["MaxCount"]) == ("1", "1")
    assert p["InstanceType"] == "g4dn.xlarge"
    assert p["ImageId"] == AMI
    assert p["SubnetId"] == network.subnets[0][0]
    assert p["SecurityGroupId.1"] == network.security_group
    assert p["IamInstanceProfile.Name"] == PROFILE
    assert p["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert p["MetadataOptions.HttpTokens"] == "required"
    assert "LaunchTemplate.LaunchTemplateName" not in p
    expected_tags = {
        LABEL_TASK: "tsk_req1",
        LABEL_ATTEMPT: "att_req1",
        LABEL_OWNER: provider.owner,
        LABEL_MARKET: "spot",
        "Name": "fusionplane-att-req1",
    }
    for n, kind in ((1, "instance"), (2, "volume")):
        assert p[f"TagSpecification.{n}.ResourceType"] == kind
        sent_tags = {
            p[f"TagSpecification.{n}.Tag.{i}.Key"]: p[f"TagSpecification.{n}.Tag.{i}.Value"]
            for i in range(1, 10)
            if f"TagSpecification.{n}.Tag.{i}.Key" in p
        }
        assert sent_tags == expected_tags
    # boto3 base64-encodes the user data; it is the shared cloud-init, byte for byte
    spec = launch.worker_spec
    sent_user_data = base64.b64decode(p["UserData"]).decode()
    assert sent_user_data == cloud_init(spec, IMAGE, attempt_id="att_req1", deadline_seconds=570)
    # the backstop for the task's deadline: the VM powers off (and so terminates) 10 minutes after boot
    assert "\nshutdown -P +10\n" in _script_of(sent_user_data)
    # the token is inside the (doubly) encoded spec only: not in clear anywhere in the request
    assert SECRET.encode() not in sent.raw

    # what EC2 (moto) keeps: read the user data back as a principal with DescribeInstanceAttribute would
    client = ec2(moto_url)
    instance_id = instance_id_of(result.backend_ref)
    attribute = client.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    user_data = base64.b64decode(attribute["UserData"]["Value"]).decode()
    lines = user_data.splitlines()
    assert lines[0] == "#cloud-config"
    at = lines.index(f"  - path: {SPEC_PATH}")
    assert lines[at + 1] == "    permissions: '0600'"
    assert lines[at + 3] == "    encoding: b64"
    content = lines[at + 4].removeprefix("    content: ")
    written = base64.b64decode(content).decode()
    assert written == spec_json(spec)
    assert json.loads(written)["callback"]["token"] == SECRET
    [instance] = instances_of(moto_url, "att_req1", provider.owner)
    assert instance["InstanceLifecycle"] == "spot"
    assert instance["InstanceType"] == "g4dn.xlarge"
    assert instance["SubnetId"] == network.subnets[0][0]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags == expected_tags
    assert not any(SECRET in value for value in tags.values())
    volumes = client.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}])["Volumes"]
    assert volumes
    for volume in volumes:
        assert {t["Key"]: t["Value"] for t in volume["Tags"]} == expected_tags


def test_the_default_image_and_a_per_target_override_over_a_reloaded_policy(
    proxy: _Ec2Proxy, make_provider: MakeProvider
) -> None:
    """The constructor every provider shares: callable targets, a default WorkerImage, settings.worker_image."""
    plain = aws_target(name="aws-plain")
    current = [plain]
    provider = make_provider(proxy.url, targets=lambda: current)
    provider.launch(request("att_plain", plain))
    # a policy reload adds a target that pins its own image: seen without a new provider
    pinned = aws_target(name="aws-pinned", settings={"worker_image": "registry.example/pinned:2"})
    current = [plain, pinned]
    provider.launch(request("att_pinned", pinned))
    plain_data, pinned_data = (base64.b64decode(c.params["UserData"]).decode() for c in proxy.calls("RunInstances"))
    assert IMAGE.image in _script_of(plain_data)
    assert "registry.example/pinned:2" in _script_of(pinned_data)
    assert IMAGE.image not in _script_of(pinned_data)
    # a reloaded target with a bad setting fails its launch naming the key; nothing is sent
    broken = aws_target(name="aws-broken", settings={"worker_image": ""})
    current = [broken]
    with pytest.raises(InvalidSpec, match=r"settings\.worker_image must be an image reference"):
        provider.launch(request("att_broken", broken))
    typo = aws_target(name="aws-typo", settings={"subnet": "subnet-1"})
    current = [typo]
    with pytest.raises(InvalidSpec, match=r"settings\.subnet is not a setting of aws targets"):
        provider.launch(request("att_typo", typo))
    # no default image: a target must name one, and one that does runs it
    bare = make_provider(proxy.url, plain, pinned, image=None)
    with pytest.raises(InvalidSpec, match=r"settings\.worker_image is required"):
        bare.launch(request("att_noimage", plain))
    bare.launch(request("att_own_image", pinned))
    assert len(proxy.calls("RunInstances")) == 3


def _script_of(user_data: str) -> str:
    """The worker script inside cloud-init's user data (base64 in write_files)."""
    lines = user_data.splitlines()
    at = lines.index("  - path: /usr/local/sbin/fusionplane-worker")
    return base64.b64decode(lines[at + 3].removeprefix("    content: ")).decode()


def test_max_price_is_omitted_without_a_plan_maximum(proxy: _Ec2Proxy, make_provider: MakeProvider) -> None:
    target = aws_target(max_price_usd_h=None)
    provider = make_provider(proxy.url, target)
    provider.launch(request("att_noprice", target, no_max_price=True))
    [sent] = proxy.calls("RunInstances")
    assert sent.params["InstanceMarketOptions.SpotOptions.SpotInstanceType"] == "one-time"
    # no MaxPrice: EC2 caps a spot instance at the on-demand price
    assert not any("MaxPrice" in key for key in sent.params)
    # without subnets or zones EC2 picks the placement
    assert "SubnetId" not in sent.params
    assert "Placement.AvailabilityZone" not in sent.params


@pytest.mark.parametrize("by", ["name", "id"])
def test_launch_template_by_name_or_id(by: str, proxy: _Ec2Proxy, make_provider: MakeProvider, moto_url: str) -> None:
    name = f"fp-worker-{uuid.uuid4().hex[:8]}"
    created = ec2(moto_url).create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": AMI, "InstanceType": "g4dn.xlarge"}
    )["LaunchTemplate"]
    template = name if by == "name" else created["LaunchTemplateId"]
    target = aws_target(settings={"image_id": None, "launch_template": template, "launch_template_version": "1"})
    provider = make_provider(proxy.url, target)
    provider.launch(request("att_lt", target))
    [sent] = proxy.calls("RunInstances")
    key = "LaunchTemplate.LaunchTemplateName" if by == "name" else "LaunchTemplate.LaunchTemplateId"
    assert sent.params[key] == template
    assert sent.params["LaunchTemplate.Version"] == "1"
    assert "ImageId" not in sent.params  # the template's
    [instance] = instances_of(moto_url, "att_lt", provider.owner)
    assert instance["ImageId"] == AMI


# --------------------------------------------------------------------------- idempotency


def test_launch_after_a_crash_adopts_the_instance_by_tag(
    proxy: _Ec2Proxy, make_provider: MakeProvider, moto_url: str
) -> None:
    target = aws_target()
    first = make_provider(proxy.url, target)
    launched = first.launch(request("att_crash", target))
    # a restarted control plane: a new provider object, no memory, and a re-rendered spec (new token)
    again = make_provider(proxy.url, target, owner=first.owner)
    adopted = again.launch(request("att_crash", target, callback=False))
    assert adopted.adopted
    assert adopted.backend_ref == launched.backend_ref
    assert len(proxy.calls("RunInstances")) == 1
    assert len(instances_of(moto_url, "att_crash", first.owner)) == 1
    assert again.status("att_crash").state in (BackendState.PENDING, BackendState.RUNNING)


def test_a_finished_instance_is_adopted_never_started_twice(proxy: _Ec2Proxy, make_provider: MakeProvider) -> None:
    target = aws_target()
    provider = make_provider(proxy.url, target)
    launched = provider.launch(request("att_done", target))
    interrupt(instance_id_of(launched.backend_ref), "Server.SpotInstanceTermination", "Spot instance termination")
    again = make_provider(proxy.url, target, owner=provider.owner)
    adopted = again.launch(request("att_done", target))
    assert adopted.adopted
    assert adopted.backend_ref == launched.backend_ref
    assert len(proxy.calls("RunInstances")) == 1
    assert again.status("att_done").state is BackendState.PREEMPTED


def test_idempotent_parameter_mismatch_adopts_the_instance_of_that_token(
    proxy: _Ec2Proxy, make_provider: MakeProvider
) -> None:
    target = aws_target()
    first = make_provider(proxy.url, target)
    launched = first.launch(request("att_mismatch", target))
    # EC2 does not list the instance yet (eventual consistency), and refuses the token reused with
    # another spec: the second provider must adopt, not start a second instance
    proxy.rules.append(_Rule("DescribeInstances", 200, _EMPTY_DESCRIBE, times=1))
    proxy.refuse("RunInstances", "IdempotentParameterMismatch", times=1)
    again = make_provider(proxy.url, target, owner=first.owner)
    adopted = again.launch(request("att_mismatch", target, callback=False))
    assert adopted.adopted
    assert adopted.backend_ref == launched.backend_ref
    assert [t["ClientToken"] for t in proxy.tries()] == ["att_mismatch-0"]


def test_an_instance_ec2_does_not_list_yet_is_pending_then_lost(proxy: _Ec2Proxy, make_provider: MakeProvider) -> None:
    now = [500.0]
    target = aws_target()
    provider = make_provider(proxy.url, target, listing_grace_s=120.0, monotonic=lambda: now[0])
    ref = provider.launch(request("att_unlisted", target)).backend_ref
    # DescribeInstances is eventually consistent: right after RunInstances it may list nothing
    proxy.rules.append(_Rule("DescribeInstances", 200, _EMPTY_DESCRIBE))
    status = provider.status("att_unlisted")
    assert status.state is BackendState.PENDING
    assert status.reason is not None
    assert instance_id_of(ref) in status.reason
    # cancel still reaches it, by the id RunInstances returned
    provider.cancel("att_unlisted")
    [terminate] = proxy.calls("TerminateInstances")
    assert terminate.params["InstanceId.1"] == instance_id_of(ref)
    now[0] += 121.0
    assert provider.status("att_unlisted").state is BackendState.LOST
    # another process never launched it: for it, the attempt is unknown
    other = make_provider(proxy.url, target, owner=provider.owner)
    unknown = other.status("att_unlisted")
    assert unknown.state is BackendState.LOST
    assert unknown.reason is not None
    assert "unknown attempt" in unknown.reason


# --------------------------------------------------------------------------- failover inside the target


def test_capacity_failover_tries_the_plan_type_then_the_others_zone_by_zone(
    proxy: _Ec2Proxy, network: Network, make_provider: MakeProvider, moto_url: str
) -> None:
    (subnet_a, zone_a), (subnet_b, zone_b) = network.subnets
    target = aws_target(network)
    # the plan picked g5.xlarge (the target lists it second): it is tried first, in every subnet
    proxy.refuse("RunInstances", "InsufficientInstanceCapacity", status=500, where={"InstanceType": "g5.xlarge"})
    proxy.refuse(
        "RunInstances",
        "InsufficientInstanceCapacity",
        status=500,
        where={"InstanceType": "g4dn.xlarge", "SubnetId": subnet_a},
    )
    provider = make_provider(proxy.url, target)
    result = provider.launch(request("att_failover", target, instance_type="g5.xlarge"))

    tries = [(t["InstanceType"], t["SubnetId"], t["ClientToken"]) for t in proxy.tries()]
    assert tries == [
        ("g5.xlarge", subnet_a, "att_failover-0"),
        ("g5.xlarge", subnet_b, "att_failover-1"),
        ("g4dn.xlarge", subnet_a, "att_failover-2"),
        ("g4dn.xlarge", subnet_b, "att_failover-3"),
    ]
    [instance] = instances_of(moto_url, "att_failover", provider.owner)
    assert result.backend_ref == f"aws:{REGION}:{instance['InstanceId']}"
    assert (instance["InstanceType"], instance["SubnetId"]) == ("g4dn.xlarge", subnet_b)
    assert instance["Placement"]["AvailabilityZone"] == zone_b != zone_a


def test_zones_are_tried_in_order_when_no_subnets_are_set(proxy: _Ec2Proxy, make_provider: MakeProvider) -> None:
    target = aws_target(zones=("us-east-1c", "us-east-1a", "eu-west-1a"), instance_types=("g4dn.xlarge",))
    proxy.refuse(
        "RunInstances", "InsufficientInstanceCapacity", status=500, where={"Placement.AvailabilityZone": "us-east-1c"}
    )
    provider = make_provider(proxy.url, target)
    provider.launch(request("att_zones", target))
    assert [t["Placement.AvailabilityZone"] for t in proxy.tries()] == ["us-east-1c", "us-east-1a"]


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        (("InsufficientInstanceCapacity",), InsufficientCapacity),
        (("SpotMaxPriceTooLow",), PriceTooHigh),
        (("SpotMaxPriceTooLow", "UnfulfillableCapacity"), InsufficientCapacity),
    ],
)
def test_every_offer_refused_gives_up_with_the_history(
    codes: tuple[str, ...],
    expected: type[ProviderError],
    proxy: _Ec2Proxy,
    network: Network,
    make_provider: MakeProvider,
) -> None:
    target = aws_target(network)
    proxy.refuse("RunInstances", codes[0], where={"InstanceType": "g4dn.xlarge"})
    proxy.refuse("RunInstances", codes[-1], where={"InstanceType": "g5.xlarge"})
    provider = make_provider(proxy.url, target)
    with pytest.raises(ProviderError) as raised:
        provider.launch(request("att_refused", target))
    error = raised.value
    assert type(error) is expected
    assert error.retryable
    assert error.target == "aws-spot"
    assert len(error.history) == 4
    assert error.history[0].startswith(f"aws/{network.subnets[0][0]}/g4dn.xlarge: {codes[0]}")
    assert error.history[3].startswith(f"aws/{network.subnets[1][0]}/g5.xlarge: {codes[-1]}")
    for line in error.history:
        assert line in error.message
    assert len(proxy.tries()) == 4


# --------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("code", "status", "expected", "fails_over"),
    [
        ("InsufficientInstanceCapacity", 500, InsufficientCapacity, True),
        ("InsufficientCapacity", 500, InsufficientCapacity, True),
        ("Unsupported", 400, InsufficientCapacity, True),
        ("SpotMaxPriceTooLow", 400, PriceTooHigh, True),
        ("MaxSpotInstanceCountExceeded", 400, QuotaExceeded, False),
        ("VcpuLimitExceeded", 400, QuotaExceeded, False),
        ("InstanceLimitExceeded", 400, QuotaExceeded, False),
        ("RequestLimitExceeded", 503, Throttled, False),
        ("Throttling", 400, Throttled, False),
        ("InvalidParameterValue", 400, InvalidSpec, False),
        ("InvalidAMIID.NotFound", 400, InvalidSpec, False),
        ("InvalidSubnetID.NotFound", 400, InvalidSpec, False),
        ("UnauthorizedOperation", 403, InvalidSpec, False),
        ("AuthFailure", 401, Unavailable, False),
        ("InternalError", 500, Unavailable, False),
        ("SomeCodeFromTheFuture", 400, Unavailable, False),
    ],
)
def test_error_codes_map_to_the_taxonomy(
    code: str,
    status: int,
    expected: type[ProviderError],
    fails_over: bool,
    proxy: _Ec2Proxy,
    make_provider: MakeProvider,
) -> None:
    target = aws_target()
    proxy.refuse("RunInstances", code, status=status)
    provider = make_provider(proxy.url, target)
    with pytest.raises(ProviderError) as raised:
        provider.launch(request("att_map", target))
    error = raised.value
    assert type(error) is expected
    assert code in error.message
    assert error.retryable is (expected is not InvalidSpec)
    if code == "UnauthorizedOperation":
        # worded as every provider words a refusal of access: the target's setup, not the task
        assert "access denied" in error.message
        assert "the target's configuration or permissions" in error.message
        assert "iam:PassRole" in error.message
    # only per-offer refusals move on to the next instance type
    assert len(proxy.tries()) == (2 if fails_over else 1)


@pytest.mark.parametrize(
    ("target_change", "spec_change", "detail"),
    [
        ({}, {"attempt_id": "att_other"}, "attempt_id"),
        ({"name": "not-configured"}, {}, "no aws target"),
        ({"settings": {"image_id": None}}, {}, "launch_template or image_id"),
        ({"regions": (REGION, OTHER_REGION)}, {}, "multi-region"),
    ],
)
def test_a_bad_request_is_invalid_spec_and_sends_nothing(
    target_change: dict[str, Any],
    spec_change: dict[str, Any],
    detail: str,
    proxy: _Ec2Proxy,
    network: Network,
    make_provider: MakeProvider,
) -> None:
    configured = aws_target(network)
    settings = configured.settings | target_change.pop("settings", {})
    asked = aws_target(**({"settings": settings} | target_change))
    # the provider knows the target it is asked about, except in the "not configured" case
    provider = make_provider(proxy.url, configured if "name" in target_change else asked)
    launch = request("att_bad", asked)
    # a spec of another attempt is refused as the request is made, before the provider sends anything
    with pytest.raises(InvalidSpec, match=detail) as raised:
        provider.launch(_with_spec(launch, spec_change))
    assert not raised.value.retryable
    assert proxy.calls("RunInstances") == []


def _with_spec(launch: LaunchRequest, spec_change: dict[str, Any]) -> LaunchRequest:
    return LaunchRequest(
        attempt_id=launch.attempt_id,
        task_id=launch.task_id,
        candidate=launch.candidate,
        worker_spec=launch.worker_spec.model_copy(update=spec_change),
    )


# --------------------------------------------------------------------------- status


def test_spot_interruption_is_preempted(proxy: _Ec2Proxy, make_provider: MakeProvider) -> None:
    target = aws_target()
    provider = make_provider(proxy.url, target)
    ref = provider.launch(request("att_spot", target)).backend_ref
    assert provider.status("att_spot").state is BackendState.RUNNING
    interrupt(instance_id_of(ref), "Server.SpotInstanceTermination", "Spot instance termination")
    status = provider.status("att_spot")
    assert status.state is BackendState.PREEMPTED
    assert status.reason is not None
    assert "Server.SpotInstanceTermination" in status.reason
    # a terminated instance is no longer ours to reconcile
    assert "att_spot" not in {o.attempt_id for o in provider.list_owned()}


def test_self_shutdown_waits_for_the_callback_then_is_lost(proxy: _Ec2Proxy, make_provider: MakeProvider) -> None:
    now = [1000.0]
    target = aws_target()
    # the grace and the reason are the ones Azure uses too (providers.bootstrap)
    provider = make_provider(proxy.url, target, monotonic=lambda: now[0])
    assert provider.self_shutdown_grace_s == SELF_SHUTDOWN_GRACE_S == 60.0
    ref = provider.launch(request("att_self", target)).backend_ref
    interrupt(instance_id_of(ref), "Client.InstanceInitiatedShutdown", "Instance initiated shutdown")

    waiting = provider.status("att_self")
    assert waiting.state is BackendState.RUNNING
    assert waiting.reason is not None
    assert "shut down by itself" in waiting.reason
    now[0] += SELF_SHUTDOWN_GRACE_S - 1
    assert provider.status("att_self").state is BackendState.RUNNING
    now[0] += 2.0
    lost = provider.status("att_self")
    # never SUCCEEDED (the exit code is not visible) nor FAILED (a success may have lost its callback)
    assert lost.state is BackendState.LOST
    assert lost.reason is not None
    assert lost.reason.endswith(SELF_SHUTDOWN_REASON)
    assert lost.exit_code is None
    # a restarted control plane gives the callback its grace again instead of deciding at once
    restarted = make_provider(proxy.url, target, owner=provider.owner, monotonic=lambda: now[0])
    assert restarted.status("att_self").state is BackendState.RUNNING
    immediate = make_provider(proxy.url, target, owner=provider.owner, self_shutdown_grace_s=0.0)
    assert immediate.status("att_self").state is BackendState.LOST


def test_termination_outside_fusionplane_is_failed_cancelled(
    proxy: _Ec2Proxy, make_provider: MakeProvider, moto_url: str
) -> None:
    target = aws_target()
    provider = make_provider(proxy.url, target)
    ref = provider.launch(request("att_console", target)).backend_ref
    ec2(moto_url).terminate_instances(InstanceIds=[instance_id_of(ref)])  # someone in the console
    status = provider.status("att_console")
    assert status.state is BackendState.FAILED
    assert status.reason is not None
    assert status.reason.startswith("cancelled outside FusionPlane")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("Server.InsufficientInstanceCapacity", BackendState.PREEMPTED),
        ("Server.InternalError", BackendState.LOST),
        ("Client.VolumeLimitExceeded", BackendState.FAILED),
    ],
)
def test_other_state_reasons(code: str, expected: BackendState, proxy: _Ec2Proxy, make_provider: MakeProvider) -> None:
    target = aws_target()
    provider = make_provider(proxy.url, target)
    ref = provider.launch(request("att_reason", target)).backend_ref
    interrupt(instance_id_of(ref), code, "ended by the test")
    status = provider.status("att_reason")
    assert status.state is expected
    assert status.reason is not None
    assert "ended by the test" in status.reason


# --------------------------------------------------------------------------- cancel


def test_cancel_tags_then_terminates_and_status_says_cancelled(
    proxy: _Ec2Proxy, make_provider: MakeProvider, moto_url: str
) -> None:
    target = aws_target()
    provider = make_provider(proxy.url, target)
    ref = provider.launch(request("att_cancel", target)).backend_ref
    provider.cancel("att_cancel")
    [instance] = instances_of(moto_url, "att_cancel", provider.owner)
    assert instance["State"]["Name"] == "terminated"
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}[TAG_CANCELLED] == "true"
    status = provider.status("att_cancel")
    assert status.state is BackendState.FAILED
    assert status.reason is not None
    assert status.reason.startswith("cancelled by FusionPlane")
    [terminate] = proxy.calls("TerminateInstances")
    assert terminate.params["InstanceId.1"] == instance_id_of(ref)
    provider.cancel("att_cancel")  # already terminated: nothing more is sent
    assert len(proxy.calls("TerminateInstances")) == 1


def test_cancel_of_an_interrupted_instance_leaves_it_alone(proxy: _Ec2Proxy, make_provider: MakeProvider) -> None:
    target = aws_target()
    provider = make_provider(proxy.url, target)
    ref = provider.launch(request("att_gone", target)).backend_ref
    interrupt(instance_id_of(ref), "Server.SpotInstanceTermination", "Spot instance termination")
    provider.cancel("att_gone")
    assert proxy.calls("TerminateInstances") == []
    assert proxy.calls("CreateTags") == []
    assert provider.status("att_gone").state is BackendState.PREEMPTED  # the interruption is not rewritten


@pytest.mark.parametrize("action", ["CreateTags", "TerminateInstances"])
def test_cancel_of_an_instance_ec2_no_longer_knows_is_success(
    action: str, proxy: _Ec2Proxy, make_provider: MakeProvider
) -> None:
    target = aws_target()
    provider = make_provider(proxy.url, target)
    provider.launch(request("att_vanished", target))
    proxy.refuse(action, "InvalidInstanceID.NotFound")
    provider.cancel("att_vanished")
    assert len(proxy.calls(action)) == 1


def test_cancel_that_ec2_refuses_raises(proxy: _Ec2Proxy, make_provider: MakeProvider) -> None:
    target = aws_target()
    provider = make_provider(proxy.url, target)
    provider.launch(request("att_refuse", target))
    proxy.refuse("TerminateInstances", "UnauthorizedOperation", status=403)
    with pytest.raises(InvalidSpec, match="UnauthorizedOperation"):
        provider.cancel("att_refuse")


# --------------------------------------------------------------------------- list_owned


def test_list_owned_finds_our_instances_by_tag_in_every_region(
    proxy: _Ec2Proxy, make_provider: MakeProvider, moto_url: str
) -> None:
    target = aws_target(regions=(REGION, OTHER_REGION))
    ours = make_provider(proxy.url, target)
    theirs = make_provider(proxy.url, target)
    east = ours.launch(request("att_east", target, task_id="tsk_east", region=REGION)).backend_ref
    west = ours.launch(request("att_west", target, task_id="tsk_west", region=OTHER_REGION)).backend_ref
    theirs.launch(request("att_theirs", target, region=REGION))
    # an instance nobody tagged: not ours either
    ec2(moto_url).run_instances(ImageId=AMI, MinCount=1, MaxCount=1)

    owned = {o.attempt_id: o for o in ours.list_owned()}
    assert set(owned) == {"att_east", "att_west"}
    assert owned["att_east"].task_id == "tsk_east"
    assert owned["att_east"].backend_ref == east
    assert owned["att_west"].backend_ref == west
    assert west.startswith(f"aws:{OTHER_REGION}:")
    assert {o.state for o in owned.values()} == {BackendState.RUNNING}
    assert {o.attempt_id for o in theirs.list_owned()} == {"att_theirs"}
    # a fresh provider (restart) finds the eu-west-1 attempt too: status searches every region
    restarted = make_provider(proxy.url, target, owner=ours.owner)
    assert restarted.status("att_west").state is BackendState.RUNNING
    ours.cancel("att_east")
    assert {o.attempt_id for o in ours.list_owned()} == {"att_west"}


def test_list_owned_follows_pages(proxy: _Ec2Proxy, make_provider: MakeProvider) -> None:
    target = aws_target()
    provider = make_provider(proxy.url, target, page_size=5)
    for n in range(6):
        provider.launch(request(f"att_page{n}", target))
    assert {o.attempt_id for o in provider.list_owned()} == {f"att_page{n}" for n in range(6)}
    pages = [c for c in proxy.calls("DescribeInstances") if "instance-state-name" in c.params.values()]
    assert len(pages) == 2
    assert "NextToken" in pages[1].params


# --------------------------------------------------------------------------- regions and endpoints that fail


def test_a_region_that_does_not_answer_never_makes_an_attempt_unknown(
    proxy: _Ec2Proxy, make_provider: MakeProvider
) -> None:
    target = aws_target(regions=(REGION, OTHER_REGION))
    provider = make_provider(proxy.url, target)
    provider.launch(request("att_east_only", target, region=REGION))
    proxy.refuse("DescribeInstances", "Unavailable", status=503, region=OTHER_REGION)
    # found in the region that answers
    assert provider.status("att_east_only").state is BackendState.RUNNING
    fresh = make_provider(proxy.url, target, owner=provider.owner)
    assert fresh.status("att_east_only").state is BackendState.RUNNING
    # not found where it could be looked for: that is not "unknown attempt"
    with pytest.raises(Unavailable):
        fresh.status("att_nowhere")
    with pytest.raises(Unavailable):
        fresh.cancel("att_nowhere")
    with pytest.raises(Unavailable):
        fresh.list_owned()


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_endpoint_down_is_unavailable_within_seconds(make_provider: MakeProvider) -> None:
    target = aws_target()
    provider = make_provider(_closed_port_url(), target)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="did not answer"):
        provider.launch(request("att_down", target))
    with pytest.raises(Unavailable):
        provider.status("att_down")
    with pytest.raises(Unavailable):
        provider.cancel("att_down")
    assert time.monotonic() - started < 10.0


def test_a_silent_endpoint_times_out_within_seconds(make_provider: MakeProvider) -> None:
    target = aws_target()
    with SilentServer() as silent:
        url = silent.url
        provider = make_provider(url, target, connect_timeout_s=0.5, read_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="did not answer"):
            provider.launch(request("att_silent", target))
        elapsed = time.monotonic() - started
    # two attempts of 0.5 s each plus standard mode's short backoff
    assert elapsed < 5.0


def test_clients_are_fail_fast_and_one_per_region(make_provider: MakeProvider) -> None:
    provider = make_provider("http://127.0.0.1:9", aws_target())
    east = provider.client(REGION)
    assert provider.client(REGION) is east
    assert provider.client(OTHER_REGION) is not east
    config = east.meta.config
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (3.0, 10.0)
    assert east.meta.region_name == REGION


# --------------------------------------------------------------------------- capacity and quote


def test_quote_comes_from_the_injected_price(make_provider: MakeProvider) -> None:
    target = aws_target()
    asked: list[Candidate] = []

    def price(candidate: Candidate) -> Quote:
        asked.append(candidate)
        return Quote(usd_per_hour=0.2104)

    candidate = candidate_for(target)
    assert make_provider("http://127.0.0.1:9", target, price=price).quote(candidate).usd_per_hour == 0.2104
    assert asked == [candidate]
    assert make_provider("http://127.0.0.1:9", target).quote(candidate).usd_per_hour is None
    capacity = make_provider("http://127.0.0.1:9", target).capacity(target)
    assert (capacity.free, capacity.total) == (None, None)


# --------------------------------------------------------------------------- on-demand


def test_an_on_demand_launch_sends_no_market_options_and_is_tagged_on_demand(
    proxy: _Ec2Proxy, network: Network, make_provider: MakeProvider, moto_url: str
) -> None:
    # a max price on the target must not turn into a spot request: on-demand pays the list price
    target = aws_target(network, market=ON_DEMAND)
    provider = make_provider(proxy.url, target)
    result = provider.launch(request("att_od1", target, task_id="tsk_od1"))

    assert not result.adopted
    [sent] = proxy.calls("RunInstances")
    p = sent.params
    assert not [key for key in p if key.startswith("InstanceMarketOptions") or "MaxPrice" in key]
    assert p["ClientToken"] == client_token("att_od1", 0)
    assert p["InstanceType"] == "g4dn.xlarge"
    assert p["InstanceInitiatedShutdownBehavior"] == "terminate"
    sent_tags = {p[f"TagSpecification.1.Tag.{i}.Key"]: p[f"TagSpecification.1.Tag.{i}.Value"] for i in range(1, 6)}
    assert sent_tags[LABEL_MARKET] == "on-demand"
    # what EC2 made of it: an on-demand instance (no lifecycle) and no spot request behind it
    [instance] = instances_of(moto_url, "att_od1", provider.owner)
    assert "InstanceLifecycle" not in instance
    assert "SpotInstanceRequestId" not in instance
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}[LABEL_MARKET] == "on-demand"
    requests = ec2(moto_url).describe_spot_instance_requests(
        Filters=[{"Name": "instance-id", "Values": [instance["InstanceId"]]}]
    )["SpotInstanceRequests"]
    assert requests == []
    assert provider.status("att_od1").state in (BackendState.PENDING, BackendState.RUNNING)


def test_a_candidate_without_a_market_launches_spot_and_an_unknown_market_is_refused(
    proxy: _Ec2Proxy, make_provider: MakeProvider
) -> None:
    target = aws_target()
    provider = make_provider(proxy.url, target)
    plain = request("att_nomarket", target)
    provider.launch(dataclasses.replace(plain, candidate=dataclasses.replace(plain.candidate, market=None)))
    [sent] = proxy.calls("RunInstances")
    assert sent.params["InstanceMarketOptions.MarketType"] == "spot"
    odd = request("att_oddmarket", target)
    with pytest.raises(InvalidSpec, match="market 'reserved' is not one of spot, on-demand"):
        provider.launch(dataclasses.replace(odd, candidate=dataclasses.replace(odd.candidate, market="reserved")))
    assert len(proxy.calls("RunInstances")) == 1


def test_on_demand_capacity_refusals_fail_over_and_give_up_as_insufficient_capacity(
    proxy: _Ec2Proxy, network: Network, make_provider: MakeProvider
) -> None:
    target = aws_target(network, market=ON_DEMAND)
    proxy.refuse("RunInstances", "InsufficientInstanceCapacity", status=500, where={"InstanceType": "g4dn.xlarge"})
    provider = make_provider(proxy.url, target)
    # the first type is refused in both subnets; the second type is accepted
    provider.launch(request("att_od_failover", target))
    assert [t["InstanceType"] for t in proxy.tries()] == ["g4dn.xlarge", "g4dn.xlarge", "g5.xlarge"]
    assert not any(key.startswith("InstanceMarketOptions") for t in proxy.tries() for key in t)

    proxy.refuse("RunInstances", "InsufficientInstanceCapacity", status=500, where={"InstanceType": "g5.xlarge"})
    with pytest.raises(InsufficientCapacity) as raised:
        provider.launch(request("att_od_none", target))
    assert raised.value.retryable
    assert "no on-demand offer of target aws-spot" in raised.value.message
    assert len(raised.value.history) == 4


def test_on_demand_adopt_status_and_cancel(proxy: _Ec2Proxy, make_provider: MakeProvider, moto_url: str) -> None:
    target = aws_target(market=ON_DEMAND)
    first = make_provider(proxy.url, target)
    launched = first.launch(request("att_od_life", target))
    again = make_provider(proxy.url, target, owner=first.owner)
    adopted = again.launch(request("att_od_life", target, callback=False))
    assert adopted.adopted
    assert adopted.backend_ref == launched.backend_ref
    assert len(proxy.calls("RunInstances")) == 1
    again.cancel("att_od_life")
    status = again.status("att_od_life")
    assert status.state is BackendState.FAILED
    assert status.reason is not None
    assert status.reason.startswith("cancelled by FusionPlane")
    # someone else terminating an on-demand instance is no interruption either
    other = first.launch(request("att_od_console", target)).backend_ref
    ec2(moto_url).terminate_instances(InstanceIds=[instance_id_of(other)])
    outside = first.status("att_od_console")
    assert outside.state is BackendState.FAILED
    assert outside.reason is not None
    assert outside.reason.startswith("cancelled outside FusionPlane")
