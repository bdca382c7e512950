"""The RunInstances request of one attempt: its offers (type x subnet or zone) and the parameters
every offer shares (pure: no API call).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.domain import (
    SPOT,
    Candidate,
    InvalidSpec,
    Target,
)
from providers.aws.settings import regional, strings_setting
from providers.base import (
    LaunchRequest,
)
from providers.bootstrap import (
    WORKER_IMAGE_KEY,
    WorkerImage,
    cloud_init,
    cloud_market,
    resource_name,
    resource_tags,
    worker_image,
)

#: EC2's ClientToken is at most 64 ASCII characters
TOKEN_MAX = 64
#: EC2's user data limit, before base64
USER_DATA_MAX = 16 * 1024


def client_token(attempt_id: str, n: int) -> str:
    """The ClientToken of the attempt's ``n``-th try: the same try always sends the same token."""
    token = f"{attempt_id}-{n}"
    if len(token) <= TOKEN_MAX:
        return token
    # too long for EC2: a digest of the attempt id keeps it deterministic and unique
    return f"fp-{hashlib.sha256(attempt_id.encode()).hexdigest()[:48]}-{n}"


@dataclass(frozen=True)
class Offer:
    instance_type: str
    subnet_id: str | None
    zone: str | None

    def label(self, region: str) -> str:
        return f"aws/{self.zone or self.subnet_id or region}/{self.instance_type}"


def offers(candidate: Candidate, target: Target, region: str) -> list[Offer]:
    """What to try, in order: the plan's instance type, then the target's others; each in every subnet or zone."""
    where = target.name
    types = list(dict.fromkeys([t for t in (candidate.instance_type, *target.instance_types) if t]))
    if not types:
        raise InvalidSpec(f"target {where}: no instance type", target=where)
    settings = target.settings
    raw = settings.get("subnet_ids", settings.get("subnets"))
    if raw is not None and not isinstance(raw, Mapping) and len(target.regions) > 1:
        # a subnet belongs to one region: a plain list cannot serve several
        raise InvalidSpec(
            f"target {where}: settings.subnet_ids must map region -> subnets for a multi-region target",
            target=where,
        )
    subnets = strings_setting(regional(raw, region), "subnet_ids", where)
    zones = [z for z in target.zones if z.startswith(region)]
    places: list[tuple[str | None, str | None]]
    if subnets:
        places = [(subnet, None) for subnet in subnets]
    elif zones:
        places = [(None, zone) for zone in zones]
    else:
        places = [(None, None)]  # EC2 picks a zone of the default VPC
    return [Offer(instance_type, subnet, zone) for instance_type in types for subnet, zone in places]


def spot_options(max_price_usd_h: float | None) -> dict[str, Any]:
    """RunInstances' ``InstanceMarketOptions`` of a one-time Spot instance (an on-demand launch sends none)."""
    spot: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
    if max_price_usd_h is not None:
        spot["MaxPrice"] = str(max_price_usd_h)
    return {"MarketType": "spot", "SpotOptions": spot}


def base_params(
    request: LaunchRequest, target: Target, region: str, *, image: WorkerImage | None, owner: str
) -> dict[str, Any]:
    """The RunInstances parameters every offer of the launch shares (user data, tags, image, profile)."""
    where, settings = target.name, target.settings
    worker = worker_image(image, regional(settings.get(WORKER_IMAGE_KEY), region), target=where)
    user_data = cloud_init(
        request.worker_spec, worker, attempt_id=request.attempt_id, deadline_seconds=request.deadline_seconds
    )
    if len(user_data.encode()) > USER_DATA_MAX:
        raise InvalidSpec(f"user data of {len(user_data.encode())} bytes is over EC2's 16 KiB", target=where)

    market = cloud_market(request.candidate)
    # ids only, never the spec or its token (anyone allowed DescribeInstances reads tags);
    # "aws:" keys are reserved by AWS and would fail the whole launch
    tags = {
        **{k: v for k, v in request.labels.items() if not k.startswith("aws:")},
        **resource_tags(task_id=request.task_id, attempt_id=request.attempt_id, owner=owner, market=market),
        "Name": resource_name("fusionplane", request.attempt_id, max_length=128),
    }
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    params: dict[str, Any] = {
        "MinCount": 1,
        "MaxCount": 1,
        # cloud-init powers off when the worker is done: that must end the bill, not park a stopped VM
        "InstanceInitiatedShutdownBehavior": "terminate",
        "UserData": user_data,
        # IMDSv2 only (no SSRF-style GET of the user data, which holds the token); hop limit 2 so
        # the container (one bridge hop away) still gets the instance profile's credentials
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tag_list},
            {"ResourceType": "volume", "Tags": tag_list},
        ],
    }
    if market == SPOT:
        params["InstanceMarketOptions"] = spot_options(request.candidate.max_price_usd_h)
    template = regional(settings.get("launch_template"), region)
    image_id = regional(settings.get("image_id"), region)
    if template is not None:
        if not isinstance(template, str) or not template:
            raise InvalidSpec(f"target {where}: settings.launch_template must be a name or an lt- id", target=where)
        version = str(settings.get("launch_template_version", "$Default"))
        key = "LaunchTemplateId" if template.startswith("lt-") else "LaunchTemplateName"
        params["LaunchTemplate"] = {key: template, "Version": version}
    elif image_id is None:
        raise InvalidSpec(f"target {where}: settings need launch_template or image_id", target=where)
    if image_id is not None:
        if not isinstance(image_id, str) or not image_id.startswith("ami-"):
            raise InvalidSpec(f"target {where}: settings.image_id must be an ami- id", target=where)
        params["ImageId"] = image_id
    profile = regional(settings.get("iam_instance_profile"), region)
    if profile is not None:
        if not isinstance(profile, str) or not profile:
            raise InvalidSpec(f"target {where}: settings.iam_instance_profile must be a name or ARN", target=where)
        params["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
    groups = strings_setting(regional(settings.get("security_group_ids"), region), "security_group_ids", where)
    if groups:
        params["SecurityGroupIds"] = groups
    return params
