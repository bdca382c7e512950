"""What a cloud target's ``settings`` must hold before anything can be launched there.

A small table, not the providers' own checks: the policy layer refuses a
target that cannot launch when the policy is loaded (``fusionctl policy
validate``, start-up, every Consul or file reload), naming the missing
setting, instead of the provider failing each attempt at launch time. The
providers still check every value's form when they launch (issue 14 moves
both to one typed settings model per provider).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LAUNCH_REQUIREMENTS", "missing_launch_settings"]

#: provider -> the settings a launch needs, each a group of keys of which one must be given
LAUNCH_REQUIREMENTS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    # providers/aws.py: a launch template, or an AMI (either may map region -> value)
    "aws": (("launch_template", "image_id"),),
    # providers/azure.py AzureSettings: no defaults for these
    "azure": (("subscription_id",), ("resource_group",), ("subnet_id",), ("image",), ("ssh_public_key",)),
}


def _given(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping | list | tuple):
        return bool(value)
    return value is not None


def missing_launch_settings(provider: str, settings: Mapping[str, Any]) -> tuple[str, ...]:
    """The requirements of :data:`LAUNCH_REQUIREMENTS` that ``settings`` leaves unmet, as ``"a or b"``."""
    return tuple(
        " or ".join(group)
        for group in LAUNCH_REQUIREMENTS.get(provider, ())
        if not any(_given(settings.get(key)) for key in group)
    )
