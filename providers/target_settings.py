"""One entry point to every provider's settings model, for the places that load a policy.

``check_target_settings`` is the :data:`controlplane.domain.SettingsCheck`
that ``fusionctl policy validate`` / ``push``, start-up and every Consul or
file reload pass into the policy layer (which may not import providers), so
a target setting of the wrong form, or an unknown key, refuses the policy
with its JSON path before it is accepted. Each provider is imported only
when a policy has a target of it (their SDKs are heavy to import).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.common import SettingsProblem

__all__ = ["check_target_settings"]


def check_target_settings(provider: str, settings: Mapping[str, Any]) -> list[SettingsProblem]:
    """What is wrong with a target's ``settings`` for its provider; [] for providers without a model."""
    if provider == "kubernetes":
        from providers.kubernetes.settings import validate_settings as kubernetes

        return kubernetes(settings)
    if provider == "aws":
        from providers.aws.settings import validate_settings as aws

        return aws(settings)
    if provider == "azure":
        from providers.azure.settings import validate_settings as azure

        return azure(settings)
    # local (slots, directories) and noop targets are checked by their providers when built
    return []
