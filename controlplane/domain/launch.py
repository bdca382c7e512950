"""What a cloud target's ``settings`` must hold before anything can be launched there.

Two halves, both applied when a policy is loaded (``fusionctl policy
validate`` / ``push``, start-up, every Consul or file reload), so a target
that cannot launch is refused there, by the JSON path of the setting,
instead of failing each attempt at launch time:

- which settings must be *present*: the small table below, which the
  policy layer reads itself (the seed form marks a built-in cloud without
  them ``not_configured``);
- the *form* of every setting, and that no unknown key is given: each
  provider's own settings model (``providers/<name>/settings.py``), which
  the policy layer cannot import. The loaders pass it in as a
  :data:`SettingsCheck` (``providers.target_settings.check_target_settings``);
  the providers run the same model again at launch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["LAUNCH_REQUIREMENTS", "SettingsCheck", "missing_launch_settings"]

#: (provider, a target's settings) -> every problem as (path inside settings, what is wrong); [] when fine
SettingsCheck = Callable[[str, Mapping[str, Any]], Sequence[tuple[str, str]]]

#: provider -> the settings a launch needs, each a group of keys of which one must be given
LAUNCH_REQUIREMENTS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    # providers/aws/launch.py: a launch template, or an AMI (either may map region -> value)
    "aws": (("launch_template", "image_id"),),
    # providers/azure/settings.py AzureSettings: no defaults for these
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
