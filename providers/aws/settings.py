"""An aws target's ``settings``: the model a policy is checked against, and the per-region reading
a launch does.

:class:`AwsTargetSettings` is the form of every key (docs/providers.md, "AWS",
lists them); most may be given once or as ``{region: value}``.
:func:`validate_settings` is what ``fusionctl policy validate``, every policy
load and every launch run. Which keys a launch cannot do without
(``launch_template`` or ``image_id``) is the domain's table
(``controlplane/domain/launch.py``), which the seed form reads too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator

from controlplane.domain import InvalidSpec
from providers.common import SettingsProblem, TargetSettings, settings_problems

__all__ = ["AwsTargetSettings", "regional", "strings_setting", "validate_settings"]

_REGIONAL = " (or a map of region -> that)"


def _per_region(check: Callable[[Any], str | None]) -> Callable[[Any], Any]:
    """A validator of a value given once, or as ``{region: value}``; ``check`` says what is wrong with one."""

    def validate(value: Any) -> Any:
        if isinstance(value, dict):
            for region, one in value.items():
                why = check(one)
                if why:
                    raise ValueError(f"(region {region}) {why}")
            return value
        why = check(value)
        if why:
            raise ValueError(why + _REGIONAL)
        return value

    return validate


def _name(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _ami(value: Any) -> str | None:
    return None if isinstance(value, str) and value.startswith("ami-") else "must be an ami- id"


def _image(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be an image reference (a non-empty string)"


def _ids(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return None
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return None
    return "must be a string or a list of strings"


_Name = Annotated[Any, AfterValidator(_per_region(_name))]
_Ami = Annotated[Any, AfterValidator(_per_region(_ami))]
_Ids = Annotated[Any, AfterValidator(_per_region(_ids))]
_Image = Annotated[Any, AfterValidator(_per_region(_image))]


class AwsTargetSettings(TargetSettings):
    """The ``settings`` of an ``aws`` target (docs/providers.md, "AWS")."""

    launch_template: _Name = None
    launch_template_version: str | int | None = None
    image_id: _Ami = None
    iam_instance_profile: _Name = None
    subnet_ids: _Ids = None
    #: the seed form's name for subnet_ids (FUSIONPLANE_AWS_SUBNETS)
    subnets: _Ids = None
    security_group_ids: _Ids = None
    worker_image: _Image = None


def validate_settings(settings: Mapping[str, Any]) -> list[SettingsProblem]:
    """What is wrong with an aws target's ``settings``, as (path inside settings, message)."""
    return settings_problems(AwsTargetSettings, settings, provider="aws")


def regional(value: Any, region: str) -> Any:
    """A setting given once for all regions, or as ``{region: value}``."""
    if isinstance(value, Mapping):
        return value.get(region)
    return value


def strings_setting(value: Any, what: str, target: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise InvalidSpec(f"target settings.{what}: must be a string or a list of strings", target=target)
