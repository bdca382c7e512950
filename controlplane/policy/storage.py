"""Per-tenant storage allow-lists: the s3 and Blob prefixes each tenant may read and write, the web hosts it may read.

The document (``policies/storage.json``, ``FUSIONPLANE_STORAGE_FILE``)::

    {
      "version": 1,
      "defaults": {"web_hosts": ["*"]},
      "tenants": {
        "acme": {
          "s3_read": ["s3://acme-media/in/", "s3://shared-faces/"],
          "s3_write": ["s3://acme-media/out/"],
          "az_read": ["az://acmestore/media/in/"],
          "az_write": ["az://acmestore/media/out/"],
          "web_hosts": ["cdn.acme.example", "*.acme.example"]
        }
      }
    }

Deny by default: a tenant without an entry may use no s3 or Blob storage at
all, and a prefix is allowed only to the tenants listed for it. Blob
prefixes are ``az://<storage account>/<container>/<folder>/`` (the whole
container when no folder is given). ``defaults`` may hold ``web_hosts``
only (never a storage prefix, which would hand every tenant the same
objects); a tenant's own ``web_hosts`` replaces it. ``"*"`` is any
public host: internal hosts stay refused unless the operator allows them
(``FUSIONPLANE_FETCH_ALLOW_HOSTS``) *and* the tenant names them.

:class:`StorageFile` is the document in force: it is re-read when the file
changes; a new version that does not validate is refused (logged, and shown
in ``last_error``) and the last good one stays in force.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.domain.fields import FieldError, json_type_name
from faceswap.access import Access, parse_az_prefix, parse_s3_prefix
from faceswap.netguard import ANY_PUBLIC_HOST, UrlRefused, parse_web_url

__all__ = [
    "StorageError",
    "StorageFile",
    "StoragePolicy",
    "TenantStorage",
    "load_storage_file",
    "parse_storage",
]

log = logging.getLogger("fusionplane.storage")

_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_MAX_ENTRIES = 256
#: how often :meth:`StorageFile.current` looks at the file (a stat, no read unless it changed)
CHECK_EVERY_S = 1.0


class StorageError(FieldError):
    """A storage document that is not valid; ``path`` is the JSON path of the bad field."""


@dataclass(frozen=True)
class TenantStorage:
    """One tenant's grant, in the spec's words (normalised ``s3://bucket/prefix/`` and
    ``az://account/container/prefix/`` folders)."""

    s3_read: tuple[str, ...] = ()
    s3_write: tuple[str, ...] = ()
    web_hosts: tuple[str, ...] = (ANY_PUBLIC_HOST,)
    az_read: tuple[str, ...] = ()
    az_write: tuple[str, ...] = ()

    def access(self) -> Access:
        """The core's form, as the worker will check it."""
        return Access.parse(
            s3_read=self.s3_read,
            s3_write=self.s3_write,
            web_hosts=self.web_hosts,
            az_read=self.az_read,
            az_write=self.az_write,
        )

    def spec_block(self) -> dict[str, list[str]]:
        """The worker spec's ``access`` block (the Blob lists only when granted: older workers know no others)."""
        block = {"s3_read": list(self.s3_read), "s3_write": list(self.s3_write), "web_hosts": list(self.web_hosts)}
        if self.az_read:
            block["az_read"] = list(self.az_read)
        if self.az_write:
            block["az_write"] = list(self.az_write)
        return block


@dataclass(frozen=True)
class StoragePolicy:
    tenants: Mapping[str, TenantStorage] = field(default_factory=dict)
    default_web_hosts: tuple[str, ...] = (ANY_PUBLIC_HOST,)
    source: str = "built-in default"

    def for_tenant(self, tenant: str) -> TenantStorage:
        """The tenant's entry; a tenant without one gets the default web hosts and no s3 or Blob storage."""
        return self.tenants.get(tenant) or TenantStorage(web_hosts=self.default_web_hosts)


def _strings(value: Any, path: str) -> list[str]:
    if not isinstance(value, list):
        raise StorageError(path, f"must be an array of strings, not {json_type_name(value)}")
    if len(value) > _MAX_ENTRIES:
        raise StorageError(path, f"at most {_MAX_ENTRIES} entries")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise StorageError(f"{path}[{index}]", f"must be a string, not {json_type_name(item)}")
    return list(value)


def _prefixes(value: Any, path: str, *, blob: bool = False) -> tuple[str, ...]:
    out = []
    for index, text in enumerate(_strings(value, path)):
        try:
            out.append(str(parse_az_prefix(text) if blob else parse_s3_prefix(text)))
        except ValueError as exc:
            raise StorageError(f"{path}[{index}]", str(exc)) from None
    return tuple(dict.fromkeys(out))


def _web_hosts(value: Any, path: str) -> tuple[str, ...]:
    out = []
    for index, text in enumerate(_strings(value, path)):
        if text != ANY_PUBLIC_HOST:
            name = text[2:] if text.startswith("*.") else text
            if any(c in name for c in "/?#*"):
                raise StorageError(f"{path}[{index}]", "must be a host, host:port, *.domain or *")
            try:
                parse_web_url(f"http://{name}/")
            except UrlRefused as exc:
                raise StorageError(f"{path}[{index}]", str(exc)) from None
        out.append(text.lower())
    return tuple(dict.fromkeys(out))


def _object(value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StorageError(path, f"must be an object, not {json_type_name(value)}")
    for key in value:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise StorageError(where, f"unknown field; expected one of {', '.join(sorted(allowed))}")
    return value


def parse_storage(document: Any, *, source: str = "document") -> StoragePolicy:
    """Validate a decoded document; errors name the JSON path of the first bad field."""
    top = _object(document, "", {"version", "description", "defaults", "tenants"})
    if top.get("version") != 1:
        raise StorageError("version", "must be 1")
    defaults = _object(top.get("defaults", {}), "defaults", {"web_hosts"})
    default_hosts = _web_hosts(defaults.get("web_hosts", [ANY_PUBLIC_HOST]), "defaults.web_hosts")
    tenants: dict[str, TenantStorage] = {}
    listed = top.get("tenants", {})
    if not isinstance(listed, dict):
        raise StorageError("tenants", f"must be an object, not {json_type_name(listed)}")
    for name, entry in listed.items():
        path = f"tenants.{name}"
        if not _TENANT.match(name):
            raise StorageError(path, "tenant names are lowercase letters, digits and '-', up to 63")
        body = _object(entry, path, {"s3_read", "s3_write", "az_read", "az_write", "web_hosts"})
        tenants[name] = TenantStorage(
            s3_read=_prefixes(body.get("s3_read", []), f"{path}.s3_read"),
            s3_write=_prefixes(body.get("s3_write", []), f"{path}.s3_write"),
            web_hosts=_web_hosts(body["web_hosts"], f"{path}.web_hosts") if "web_hosts" in body else default_hosts,
            az_read=_prefixes(body.get("az_read", []), f"{path}.az_read", blob=True),
            az_write=_prefixes(body.get("az_write", []), f"{path}.az_write", blob=True),
        )
    return StoragePolicy(tenants=tenants, default_web_hosts=default_hosts, source=source)


def load_storage_file(path: Path) -> StoragePolicy:
    """Read and validate one file; raises :class:`StorageError` (bad document) or OSError."""
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise StorageError("", f"{path} is not valid JSON: {exc}") from None
    return parse_storage(document, source=str(path))


def _stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class StorageFile:
    """The storage policy in force: read at start (an invalid file is an error), re-read when it changes.

    ``path`` None is the built-in default: public web hosts for every tenant, no s3.
    """

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self._clock = path, clock
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._checked = clock()
        if path is None:
            self._stamp: tuple[int, int, int] | None = None
            self._policy = StoragePolicy()
        else:
            self._stamp = _stamp(path)
            self._policy = load_storage_file(path)

    def current(self) -> StoragePolicy:
        """The policy in force, after a look at the file at most every :data:`CHECK_EVERY_S`."""
        if self.path is None or self._clock() - self._checked < CHECK_EVERY_S:
            return self._policy
        with self._lock:
            self._checked = self._clock()
            try:
                stamp = _stamp(self.path)
                if stamp != self._stamp:
                    self._policy = load_storage_file(self.path)
                    self._stamp, self.last_error = stamp, None
                    log.info("", extra={"event": "storage_policy_loaded", "source": str(self.path)})
            except (OSError, StorageError) as exc:
                if str(exc) != self.last_error:
                    log.error(
                        "", extra={"event": "storage_policy_rejected", "source": str(self.path), "error": str(exc)}
                    )
                self.last_error = str(exc)
        return self._policy

    def reload_now(self) -> StoragePolicy:
        """Look at the file at once (tests, and operators after an edit)."""
        self._checked = self._clock() - CHECK_EVERY_S
        return self.current()
