"""What one job may touch in object storage and on the web: a tenant's grant, checked before any I/O.

Workers of every tenant may share one storage credential, so the credential
cannot tell tenant A's objects from tenant B's; this grant does. The control
plane checks it at submit time and writes it into each attempt's worker
spec, and the worker checks it again before it reads or writes anything.

Prefixes match on ``bucket/`` and whole key folders: ``s3://tenant-a/in``
means the folder ``in/`` of bucket ``tenant-a``; it covers neither bucket
``tenant-a-private`` nor the key ``inbox/x``. Azure Blob prefixes are the
same with one more level: ``az://account/container/folder/`` covers that
folder of that container of that storage account only. Keys (and blob
names) with ``.``/``..`` or empty segments, backslashes, percent-encoding, a
query (an ``az://`` URI carrying a SAS token) or a fragment are refused
outright: stores and clients disagree on what they mean, and a credential
never travels inside a URI.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from faceswap.errors import BadInput
from faceswap.netguard import ANY_PUBLIC_HOST, UrlRefused, host_listed, parse_web_url

__all__ = ["Access", "AzPath", "AzPrefix", "S3Prefix", "check_s3_key", "parse_az_prefix", "parse_s3_prefix", "split_az"]

_BUCKET = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
#: storage account names: 3..24 of a-z, 0-9 (Azure's rule; they are also the endpoint's host name)
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
#: Blob container names: 3..63 of a-z, 0-9, '-', a letter or digit first and last, no "--"
_CONTAINER = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


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
class AzPath:
    """``az://<account>/<container>/<name>``: a blob, or with ``name`` empty or ending in ``/`` a folder."""

    account: str
    container: str
    name: str = ""

    def __str__(self) -> str:
        return f"az://{self.account}/{self.container}/{self.name}"


def split_az(uri: str) -> AzPath:
    """Split an ``az://`` URI, checking the account, container and name rules; ValueError says why."""
    if not uri.startswith("az://"):
        raise ValueError("must start with az://")
    rest = uri[len("az://") :]
    if any(c in rest for c in "?#@:") or not rest.isascii() or any(ord(c) <= 32 or ord(c) == 127 for c in rest):
        raise ValueError("az URIs are az://account/container/blob, with no query (SAS token), fragment, user or port")
    account, _, rest = rest.partition("/")
    container, _, name = rest.partition("/")
    if not _ACCOUNT.match(account):
        raise ValueError(f"{account!r} is not a valid storage account name (3-24 of a-z, 0-9)")
    if not _CONTAINER.match(container) or "--" in container:
        raise ValueError(f"{container!r} is not a valid container name (3-63 of a-z, 0-9, '-', no '--')")
    if name:
        why = check_s3_key(name)
        if why:
            raise ValueError(why.replace("keys", "blob names"))
    return AzPath(account, container, name)


@dataclass(frozen=True)
class AzPrefix:
    """A storage account, a container and a blob-name prefix that is empty (the whole container) or ends in ``/``."""

    account: str
    container: str
    prefix: str = ""

    def covers(self, path: AzPath) -> bool:
        return (path.account, path.container) == (self.account, self.container) and path.name.startswith(self.prefix)

    def __str__(self) -> str:
        return f"az://{self.account}/{self.container}/{self.prefix}"


def parse_az_prefix(text: str) -> AzPrefix:
    """``az://account/container[/]`` or ``az://account/container/folder[/]``; raises ValueError saying why."""
    path = split_az(text)
    prefix = path.name if not path.name or path.name.endswith("/") else f"{path.name}/"
    return AzPrefix(path.account, path.container, prefix)


@dataclass(frozen=True)
class Access:
    """A job's grant: the s3 and Blob prefixes it may read and write, and the web hosts it may read.

    ``web_hosts`` entries are host names, ``host:port``, ``*.domain`` or ``*``
    (any public host; an internal host the operator allows must be named).
    """

    s3_read: tuple[S3Prefix, ...] = ()
    s3_write: tuple[S3Prefix, ...] = ()
    web_hosts: tuple[str, ...] = (ANY_PUBLIC_HOST,)
    az_read: tuple[AzPrefix, ...] = ()
    az_write: tuple[AzPrefix, ...] = ()

    @classmethod
    def parse(
        cls,
        *,
        s3_read: Iterable[str],
        s3_write: Iterable[str],
        web_hosts: Iterable[str],
        az_read: Iterable[str] = (),
        az_write: Iterable[str] = (),
    ) -> Access:
        return cls(
            s3_read=tuple(parse_s3_prefix(p) for p in s3_read),
            s3_write=tuple(parse_s3_prefix(p) for p in s3_write),
            web_hosts=tuple(web_hosts),
            az_read=tuple(parse_az_prefix(p) for p in az_read),
            az_write=tuple(parse_az_prefix(p) for p in az_write),
        )

    def check(self, uri: str, *, field: str, write: bool = False) -> None:
        """Raise :class:`BadInput` naming ``field`` when ``uri`` (s3, az or http(s)) is outside this grant.

        Local paths are not this grant's business (the control plane keeps
        them under the tenant's folders).
        """
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
        if scheme == "s3":
            self._check_s3(uri, field=field, write=write)
        elif scheme == "az":
            self._check_az(uri, field=field, write=write)
        elif scheme in ("http", "https"):
            if write:
                raise BadInput("outputs can be written to a path, file://, s3:// or az:// only", field=field)
            try:
                target = parse_web_url(uri)
            except UrlRefused as exc:
                raise BadInput(f"cannot read {uri}: {exc}", field=field) from None
            if ANY_PUBLIC_HOST not in self.web_hosts and not host_listed(target, self.web_hosts):
                raise BadInput(f"host {target.host} is not in this tenant's allowed web hosts", field=field)

    def check_checkpoint(self, uri: str, *, field: str = "checkpoint") -> None:
        """A checkpoint is a folder the job both reads and writes."""
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
        folder = uri.rstrip("/") + "/"
        if scheme == "s3":
            self._check_s3(folder, field=field, write=False)
            self._check_s3(folder, field=field, write=True)
        elif scheme == "az":
            self._check_az(folder, field=field, write=False)
            self._check_az(folder, field=field, write=True)

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

    def _check_az(self, uri: str, *, field: str, write: bool) -> None:
        try:
            path = split_az(uri)
        except ValueError as exc:
            raise BadInput(str(exc), field=field) from None
        if not path.name:
            raise BadInput("az URIs are az://account/container/blob", field=field)
        grants = self.az_write if write else self.az_read
        if not any(grant.covers(path) for grant in grants):
            verb = "write to" if write else "read"
            raise BadInput(f"this tenant may not {verb} {path}", field=field)
