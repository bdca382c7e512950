"""Per-tenant webhook settings: the default notify URL and the signing secrets, from the operator's file.

``FUSIONPLANE_WEBHOOKS_FILE`` (default ``var/webhooks.json``, beside the
tokens file, because it holds secrets: it must not be readable by group or
others)::

    {"version": 1,
     "tenants": {"acme": {"url": "https://hooks.acme.example/fusionplane",
                          "secrets": ["whsec_<new>", "whsec_<old>"]}}}

``url`` is the default for tasks that name no ``notify_url``; ``secrets``
are one or two keys: every message is signed with each, so a receiver may
switch keys while both are listed (rotation). A tenant with no secret gets
no webhook at all: an unsigned POST could not be told from a forgery. The
file is re-read when it changes; a bad edit is logged and the last good
settings stay in force.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.domain.tenant import TENANT_RULE, is_tenant_name
from controlplane.domain.webhooks import WebhookSecret, parse_secret

__all__ = ["TenantWebhooks", "WebhookSettings", "WebhooksFile", "WebhooksFileError", "parse_webhooks"]

log = logging.getLogger("fusionplane.webhooks")
CHECK_EVERY_S = 2.0
#: two keys at once: the new one and the one receivers may still verify with
MAX_SECRETS = 2


class WebhooksFileError(ValueError):
    """The webhooks file is unusable; the message names the tenant and key, never a secret."""


@dataclass(frozen=True)
class TenantWebhooks:
    url: str | None = None
    secrets: tuple[WebhookSecret, ...] = ()


@dataclass(frozen=True)
class WebhookSettings:
    tenants: Mapping[str, TenantWebhooks] = field(default_factory=dict)

    def for_tenant(self, tenant: str) -> TenantWebhooks:
        return self.tenants.get(tenant, TenantWebhooks())


def _tenant(name: str, raw: Any) -> TenantWebhooks:
    if not isinstance(raw, dict) or set(raw) - {"url", "secrets"}:
        raise WebhooksFileError(f"tenants.{name}: an object with url and secrets only")
    url = raw.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))):
        raise WebhooksFileError(f"tenants.{name}.url: an http(s) URL")
    secrets = raw.get("secrets", [])
    if not isinstance(secrets, list) or len(secrets) > MAX_SECRETS or not all(isinstance(s, str) for s in secrets):
        raise WebhooksFileError(f"tenants.{name}.secrets: a list of at most {MAX_SECRETS} whsec_ strings")
    try:
        parsed = tuple(parse_secret(s) for s in secrets)
    except ValueError as exc:
        raise WebhooksFileError(f"tenants.{name}.secrets: {exc}") from None
    return TenantWebhooks(url=url, secrets=parsed)


def parse_webhooks(document: Any) -> WebhookSettings:
    """The settings of one document, or WebhooksFileError."""
    if not isinstance(document, dict) or document.get("version") != 1 or set(document) - {"version", "tenants"}:
        raise WebhooksFileError('the webhooks file is {"version": 1, "tenants": {...}}')
    raw_tenants = document.get("tenants", {})
    if not isinstance(raw_tenants, dict):
        raise WebhooksFileError("tenants: an object of tenant names")
    tenants = {}
    for name, raw in raw_tenants.items():
        if not is_tenant_name(name):
            raise WebhooksFileError(f"tenants: {name[:64]!r} is not a tenant name ({TENANT_RULE})")
        tenants[name] = _tenant(name, raw)
    return WebhookSettings(tenants=tenants)


def _load(path: Path) -> WebhookSettings:
    if path.stat().st_mode & 0o077:
        raise WebhooksFileError(f"{path} holds secrets: chmod 600 it (it is readable by group or others)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise WebhooksFileError(f"{path} is not valid JSON: {exc}") from None
    return parse_webhooks(document)


class WebhooksFile:
    """The webhook settings in force; a missing file is "no webhooks configured", a bad one an error at start."""

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self._clock = path, clock
        self._lock = threading.Lock()
        self._checked = clock()
        self._stamp = self._stamp_of()
        self._settings = _load(path) if path is not None and self._stamp is not None else WebhookSettings()
        self.last_error: str | None = None

    def _stamp_of(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def current(self) -> WebhookSettings:
        """The settings in force, after a look at the file at most every :data:`CHECK_EVERY_S`."""
        if self.path is None or self._clock() - self._checked < CHECK_EVERY_S:
            return self._settings
        with self._lock:
            self._checked = self._clock()
            try:
                stamp = self._stamp_of()
                if stamp != self._stamp:
                    self._settings = _load(self.path) if stamp is not None else WebhookSettings()
                    self._stamp, self.last_error = stamp, None
                    log.info("", extra={"event": "webhook_settings_loaded", "source": str(self.path)})
            except (OSError, WebhooksFileError) as exc:
                if str(exc) != self.last_error:
                    log.error(
                        "", extra={"event": "webhook_settings_rejected", "source": str(self.path), "error": str(exc)}
                    )
                self.last_error = str(exc)
        return self._settings
