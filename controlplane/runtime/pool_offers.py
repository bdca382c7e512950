"""Pods on cloud node pools share their cloud's offers: the breaker and the spot history count them there.

An attempt on an EKS or AKS spot pool is recorded under the provider that
launched it (``kubernetes``), with the region and instance type its
candidate was priced at. Its preemption or capacity refusal is the same
market's word as a spot VM's, so the breaker of ``aws/us-east-1/g5.xlarge``
must count it: this module moves each ``kubernetes`` offer to the cloud of
the node pool that prices it. Region and instance-type names do not overlap
between the clouds (``us-east-1``/``g5.xlarge`` against
``eastus``/``Standard_NC4as_T4_v3``), so (region, type) names the pool's cloud.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from controlplane.domain import Target

__all__ = ["POD_PROVIDER", "merge_pool_offers", "pool_clouds"]

#: the provider under which a pod's attempt is recorded
POD_PROVIDER = "kubernetes"
_Key = tuple[str, str | None, str | None]
_R = TypeVar("_R")


def pool_clouds(targets: Iterable[Target]) -> dict[tuple[str, str], str]:
    """(region, instance type) -> the cloud, for every offer of the targets' node pools."""
    clouds: dict[tuple[str, str], str] = {}
    for target in targets:
        if target.provider == POD_PROVIDER and target.cloud is not None:
            for instance_type in target.cloud.instance_types:
                clouds[(target.cloud.region, instance_type)] = target.cloud.provider
    return clouds


def merge_pool_offers(
    found: Mapping[_Key, _R], clouds: Mapping[tuple[str, str], str], add: Callable[[_R, _R, str], _R]
) -> dict[_Key, _R]:
    """``found`` with each node-pool offer of ``kubernetes`` counted under its cloud (``add`` sums two records).

    Other ``kubernetes`` offers (the private cluster's, with no region or
    type, and those of pools no longer in the policy) are left out: no breaker
    guards them, and a breaker of their own would only log changes nobody acts on.
    """
    merged: dict[_Key, _R] = {}
    for (provider, region, instance_type), record in found.items():
        cloud = clouds.get((region or "", instance_type or "")) if provider == POD_PROVIDER else provider
        if cloud is None:
            continue
        key: _Key = (cloud, region, instance_type)
        earlier = merged.get(key)
        merged[key] = record if earlier is None else add(earlier, record, key[0])
    return merged


def summed(first: Any, second: Any, provider: str) -> Any:
    """Two records of one offer as one: counts added, latest moments kept, under ``provider``."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(first):
        a, b = getattr(first, field.name), getattr(second, field.name)
        if field.name == "provider":
            values[field.name] = provider
        elif isinstance(a, bool) or isinstance(b, bool):
            values[field.name] = a or b
        elif isinstance(a, int | float) and isinstance(b, int | float):
            values[field.name] = a + b
        elif a is None or b is None:
            values[field.name] = a if b is None else b
        elif field.name in ("region", "instance_type"):
            values[field.name] = a
        else:
            values[field.name] = max(a, b)  # moments: the latest of the two
    return dataclasses.replace(first, **values)
