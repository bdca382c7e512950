"""The field readers every part of the policy parser shares: an object with known keys, a number, a boolean.

Each raises :class:`~controlplane.policy.model.PolicyError` naming the JSON
path of the bad field.
"""

from __future__ import annotations

import math
from typing import Any

from controlplane.domain.fields import json_path, json_type_name
from controlplane.policy.model import PolicyError

__all__ = ["boolean", "json_object", "number"]


def json_object(value: Any, path: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(path, f"must be an object, not {json_type_name(value)}")
    for key in sorted(value):
        if key not in allowed:
            raise PolicyError(json_path(path, key), f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return value


def number(value: Any, path: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyError(path, f"must be a number, not {json_type_name(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{'-inf' if low is None else f'{low:g}'}..{'inf' if high is None else f'{high:g}'}"
        raise PolicyError(path, f"must be within {bounds}")
    return float(value)


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(path, f"must be true or false, not {json_type_name(value)}")
    return value
