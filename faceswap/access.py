"""What one job may touch in object storage and on the web: a tenant's grant, checked before any I/O.

Workers of every tenant may share one storage credential, so the credential
cannot tell tenant A's objects from tenant B's; this grant does. The control
plane checks it at submit time and writes it into each attempt's worker
spec, and the worker checks it again before it reads or writes anything.

Prefixes match on ``bucket/`` and whole key folders: ``s3://tenant-a/in``
means the folder ``in/`` of bucket ``tenant-a``; it covers neither bucket
``tenant-a-private`` nor the key ``inbox/x``. Keys with ``.``/``..`` or empty
segments, backslashes, percent-encoding, a query or a fragment are refused
outright: stores and clients disagree on what they mean.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from faceswap.errors import BadInput
from faceswap.netguard import ANY_PUBLIC_HOST, UrlRefused, host_listed, parse_web_url

__all__ = ["Access", "S3Prefix", "check_s3_key", "parse_s3_prefix"]

_BUCKET = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


def check_s3_key(key: str) -> str | None:
    """Why an object key (or key prefix) is refused, or None."""
    if "\\" in key:
        return "backslashes are not allowed in keys"
    if _PERCENT.search(key):
        return "keys may not be percent-encoded; write the key as it is"
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.rstrip("/").split("/")):
        return "keys may not hold empty, '.' or '..' segments"
    return None


@dataclass(frozen=True)
class S3Prefix:
    """``bucket`` and a key prefix that is empty (the whole bucket) or ends in ``/``."""

    bucket: str
    prefix: str = ""

    def covers(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_s3_prefix(text: str) -> S3Prefix:
    """``s3://bucket``, ``s3://bucket/`` or ``s3://bucket/folder[/]``; raises ValueError saying why."""
    if not text.startswith("s3://"):
        raise ValueError("must start with s3://")
    rest = text[len("s3://") :]
    if any(c in rest for c in "?#@:") or not rest.isascii() or any(ord(c) <= 32 for c in rest):
        raise ValueError("must be s3://bucket or s3://bucket/prefix, with no query, port or user")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a valid bucket name")
    if prefix:
        why = check_s3_key(prefix)
        if why:
            raise ValueError(why)
        prefix = prefix if prefix.endswith("/") else f"{prefix}/"
    return S3Prefix(bucket, prefix)


@dataclass(frozen=True)
class Access:
    """A job's grant: the s3 prefixes it may read and write, and the web hosts it may read.

    ``web_hosts`` entries are host names, ``host:port``, ``*.domain`` or ``*``
    (any public host; an internal host the operator allows must be named).
    """

    s3_read: tuple[S3Prefix, ...] = ()
    s3_write: tuple[S3Prefix, ...] = ()
    web_hosts: tuple[str, ...] = (ANY_PUBLIC_HOST,)

    @classmethod
    def parse(cls, *, s3_read: Iterable[str], s3_write: Iterable[str], web_hosts: Iterable[str]) -> Access:
        return cls(
            s3_read=tuple(parse_s3_prefix(p) for p in s3_read),
            s3_write=tuple(parse_s3_prefix(p) for p in s3_write),
            web_hosts=tuple(web_hosts),
        )

    def check(self, uri: str, *, field: str, write: bool = False) -> None:
        """Raise :class:`BadInput` naming ``field`` when ``uri`` (s3 or http(s)) is outside this grant.

        Local paths are not this grant's business (the control plane keeps
        them under the tenant's folders).
        """
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
        if scheme == "s3":
            self._check_s3(uri, field=field, write=write)
        elif scheme in ("http", "https"):
            if write:
                raise BadInput("outputs can be written to a path, file:// or s3:// only", field=field)
            try:
                target = parse_web_url(uri)
            except UrlRefused as exc:
                raise BadInput(f"cannot read {uri}: {exc}", field=field) from None
            if ANY_PUBLIC_HOST not in self.web_hosts and not host_listed(target, self.web_hosts):
                raise BadInput(f"host {target.host} is not in this tenant's allowed web hosts", field=field)

    def check_checkpoint(self, uri: str, *, field: str = "checkpoint") -> None:
        """A checkpoint is a folder the job both reads and writes."""
        if uri.split("://", 1)[0].lower() == "s3":
            folder = uri.rstrip("/") + "/"
            self._check_s3(folder, field=field, write=False)
            self._check_s3(folder, field=field, write=True)

    def _check_s3(self, uri: str, *, field: str, write: bool) -> None:
        rest = uri[len("s3://") :]
        bucket, _, key = rest.partition("/")
        if any(c in rest for c in "?#") or not key:
            raise BadInput("s3 URIs are s3://bucket/key, with no query or fragment", field=field)
        why = check_s3_key(key)
        if why:
            raise BadInput(why, field=field)
        grants = self.s3_write if write else self.s3_read
        if not any(grant.covers(bucket, key) for grant in grants):
            verb = "write to" if write else "read"
            raise BadInput(f"this tenant may not {verb} s3://{bucket}/{key}", field=field)
