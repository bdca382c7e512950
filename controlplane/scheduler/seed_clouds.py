"""The seed form's built-in clouds, configured from the environment where policies are loaded.

A seed document (``task_rules`` only) names no cloud settings; these
variables give its built-in ``aws`` and ``azure`` targets what a launch
needs (docs/policies.md, "The seed form"). Unset, a built-in cloud is
``not_configured``: plans leave it out and its tasks run on ``local``.

| variable | becomes |
|---|---|
| ``FUSIONPLANE_AWS_LAUNCH_TEMPLATE`` | ``settings.launch_template`` (a name or an ``lt-`` id) |
| ``FUSIONPLANE_AWS_IMAGE_ID`` | ``settings.image_id`` (an ``ami-`` id; one of the two is needed) |
| ``FUSIONPLANE_AWS_SUBNETS`` | ``settings.subnets`` (comma-separated) |
| ``FUSIONPLANE_AWS_SECURITY_GROUPS`` | ``settings.security_group_ids`` (comma-separated) |
| ``FUSIONPLANE_AWS_INSTANCE_PROFILE`` | ``settings.iam_instance_profile`` |
| ``FUSIONPLANE_AWS_REGION`` | the region (default us-east-1) |
| ``FUSIONPLANE_AWS_MAX_PRICE_USD_H`` | ``max_price_usd_h``: the budget threshold for urgent or peak work |
| ``FUSIONPLANE_AZURE_<KEY>`` for ``SUBSCRIPTION_ID``, ``RESOURCE_GROUP``, ``SUBNET_ID``, ``IMAGE``, |
| ``SSH_PUBLIC_KEY`` | the ``settings`` keys of the same names, lower case (all needed) |
| ``FUSIONPLANE_AZURE_REGION`` | the region (default eastus) |
| ``FUSIONPLANE_AZURE_MAX_PRICE_USD_H`` | ``max_price_usd_h`` |
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from controlplane.policy.seed import BuiltinCloud, SeedClouds

__all__ = ["seed_clouds_from_env"]

_AWS_TEXT = {
    "FUSIONPLANE_AWS_LAUNCH_TEMPLATE": "launch_template",
    "FUSIONPLANE_AWS_IMAGE_ID": "image_id",
    "FUSIONPLANE_AWS_INSTANCE_PROFILE": "iam_instance_profile",
}
_AWS_LISTS = {"FUSIONPLANE_AWS_SUBNETS": "subnets", "FUSIONPLANE_AWS_SECURITY_GROUPS": "security_group_ids"}
_AZURE_TEXT = {
    f"FUSIONPLANE_AZURE_{key.upper()}": key
    for key in ("subscription_id", "resource_group", "subnet_id", "image", "ssh_public_key")
}


def _price(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: not a price in USD per hour: {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a positive number of USD per hour, not {raw}")
    return value


def _cloud(env: Mapping[str, str], prefix: str, text: Mapping[str, str], lists: Mapping[str, str]) -> BuiltinCloud:
    settings: dict[str, Any] = {key: env[name].strip() for name, key in text.items() if env.get(name, "").strip()}
    for name, key in lists.items():
        items = [item.strip() for item in env.get(name, "").split(",") if item.strip()]
        if items:
            settings[key] = items
    return BuiltinCloud(
        settings=settings,
        max_price_usd_h=_price(env, f"{prefix}MAX_PRICE_USD_H"),
        region=env.get(f"{prefix}REGION", "").strip() or None,
    )


def seed_clouds_from_env(env: Mapping[str, str] | None = None) -> SeedClouds:
    """Both built-in clouds from ``env`` (default: this process's); a bad price raises ValueError naming it."""
    env = os.environ if env is None else env
    return SeedClouds(
        aws=_cloud(env, "FUSIONPLANE_AWS_", _AWS_TEXT, _AWS_LISTS),
        azure=_cloud(env, "FUSIONPLANE_AZURE_", _AZURE_TEXT, {}),
    )
