"""A kubernetes target's ``cloud`` block: the node pool it lands on, checked field by field.

The pool is where the target's prices come from, so its region, instance
types and capacity type *are* the target's ``regions``, ``instance_types``
and ``market``: a target that gives both would have two answers to "what
does this cost", and is refused.
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.domain import CLOUD_PROVIDERS, CloudPool
from controlplane.domain.cloud_pool import AUTOSCALERS, CAPACITY_TYPES, DEFAULT_AUTOSCALER
from controlplane.policy.model import PolicyError
from controlplane.policy.parse_fields import json_object, number

__all__ = ["CLOUD_KEY", "pool_fields"]

CLOUD_KEY = "cloud"
_OFFER_PART = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_POOL_KEYS = frozenset({"provider", "region", "capacity_type", "instance_types", "autoscaler", "capacity_wait_seconds"})
#: what the pool decides, so the target may not say it again
_DERIVED = ("regions", "instance_types", "market")


def pool_fields(raw: dict[str, Any], provider: str, path: str) -> dict[str, Any]:
    """The Target fields a ``cloud`` block sets (none without one): the pool, its region, types and market."""
    if CLOUD_KEY not in raw:
        return {}
    where = f"{path}.{CLOUD_KEY}"
    if provider != "kubernetes":
        raise PolicyError(where, f"only kubernetes targets run on a cloud node pool; an {provider} target is one")
    for key in _DERIVED:
        if key in raw:
            raise PolicyError(f"{path}.{key}", f"comes from {CLOUD_KEY} on a target with a node pool: give it there")
    pool = _pool(raw[CLOUD_KEY], where)
    return {
        "cloud": pool,
        "regions": (pool.region,),
        "instance_types": pool.instance_types,
        "market": pool.capacity_type,
    }


def _pool(value: Any, path: str) -> CloudPool:
    raw = json_object(value, path, _POOL_KEYS)
    for required in ("provider", "region", "instance_types"):
        if required not in raw:
            raise PolicyError(f"{path}.{required}", "is required")
    cloud = raw["provider"]
    if cloud not in CLOUD_PROVIDERS:
        raise PolicyError(f"{path}.provider", f"must be one of {', '.join(CLOUD_PROVIDERS)}")
    capacity_type = raw.get("capacity_type", "spot")
    if capacity_type not in CAPACITY_TYPES:
        raise PolicyError(f"{path}.capacity_type", f"must be one of {', '.join(CAPACITY_TYPES)}")
    autoscaler = raw.get("autoscaler", DEFAULT_AUTOSCALER[cloud])
    if autoscaler not in AUTOSCALERS[cloud]:
        raise PolicyError(f"{path}.autoscaler", f"must be one of {', '.join(AUTOSCALERS[cloud])} on {cloud}")
    wait = raw.get("capacity_wait_seconds", 90.0)
    wait = number(wait, f"{path}.capacity_wait_seconds", low=0)
    if wait <= 0:
        raise PolicyError(f"{path}.capacity_wait_seconds", "must be above 0")
    return CloudPool(
        provider=cloud,
        region=_text(raw["region"], f"{path}.region"),
        capacity_type=str(capacity_type),
        instance_types=_types(raw["instance_types"], f"{path}.instance_types"),
        autoscaler=str(autoscaler),
        capacity_wait_seconds=wait,
    )


def _text(value: Any, path: str) -> str:
    # a region and a type end up in signal keys (aws/<region>/<type>), price API calls and node-selector
    # label values: the label-value alphabet keeps a "/" or a space from reading as another offer
    if not isinstance(value, str) or not _OFFER_PART.fullmatch(value):
        raise PolicyError(path, "must be 1..63 of [A-Za-z0-9._-], starting and ending with a letter or digit")
    return value


def _types(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyError(path, "must be a non-empty array of instance types / VM sizes")
    seen: list[str] = []
    for index, item in enumerate(value):
        name = _text(item, f"{path}[{index}]")
        if name in seen:
            raise PolicyError(f"{path}[{index}]", f"{name!r} is listed twice")
        seen.append(name)
    return tuple(seen)
