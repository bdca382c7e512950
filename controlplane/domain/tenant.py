"""Tenant names: one syntax for tokens, tasks, dry runs and policy overlays.

A tenant name becomes a folder (``<input root>/<tenant>/``), a Consul key
(``.../tenants/<tenant>``) and a metrics label, so it is lowercase letters,
digits and ``-`` only, starting with a letter or digit, at most 63
characters: no ``/``, ``..``, dots or case variants that could name the same
place twice.
"""

from __future__ import annotations

import re

__all__ = ["TENANT_NAME", "TENANT_PATTERN", "TENANT_RULE", "is_tenant_name"]

#: the whole name, anchored (pydantic ``pattern=`` and ``re.match`` alike)
TENANT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
TENANT_NAME = re.compile(TENANT_PATTERN)
#: what an error message says a tenant name must be
TENANT_RULE = "1-63 lowercase letters, digits or '-', starting with a letter or digit"


def is_tenant_name(value: object) -> bool:
    """True when ``value`` is a string that is a valid tenant name."""
    # fullmatch: ``$`` alone would accept a trailing newline
    return isinstance(value, str) and TENANT_NAME.fullmatch(value) is not None
