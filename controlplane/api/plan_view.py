"""The "plan view": a dry-run plan as JSON (docs/policies.md, "Dry-run output").

One shape for ``fusionctl plan -o json`` and ``POST /v1/plan``, so a plan
tried from a shell reads the same as one asked of the API. It is not the
stored receipt (``controlplane.store.codec``): that one is versioned for
replay; this one is for people and scripts comparing what-ifs.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from controlplane.domain import PlacementPlan

__all__ = ["plan_view"]


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    """Plain JSON: times as ISO strings, and non-finite numbers as null (JSON has none, the API refuses them)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plan_view(plan: PlacementPlan) -> dict[str, Any]:
    """``{policy_version, decided_at, candidates, rejected, trace, signals_used, replan_by}``."""
    return {
        "policy_version": plan.policy_version,
        "decided_at": _time(plan.decided_at),
        "candidates": [
            {
                "target": c.target,
                "provider": c.provider,
                "private": c.private,
                "region": c.region,
                "instance_type": c.instance_type,
                "max_price_usd_h": _jsonable(c.max_price_usd_h),
                "expected_usd_h": _jsonable(c.expected_usd_h),
                "market": c.market,
                "expected_usd_per_task": _jsonable(c.expected_usd_per_task),
                "completion_chance": _jsonable(c.completion_chance),
                "history_launches": c.history_launches,
                "hedge": c.hedge_group,
                "reasons": list(c.reasons),
            }
            for c in plan.candidates
        ],
        # a list, so a later engine may give a rejection several reasons without changing the shape
        "rejected": [{"target": r.target, "code": r.code, "reasons": [r.detail]} for r in plan.rejections],
        "trace": list(plan.trace),
        "signals_used": _jsonable(plan.signals_used),
        "replan_by": None if plan.replan_by is None else _time(plan.replan_by),
    }
