"""A ``pvc`` store as the control plane sees it: the same ReadWriteMany claim, mounted into its own pod too.

A worker's pod mounts the claim at the target's ``mount_path``; a control
plane running in the cluster mounts it wherever ``FUSIONPLANE_PVC_MOUNTS``
says (``claim=/mnt/claim``). :class:`PvcStore` maps ``pvc://<claim>/<path>``
to ``<control-plane mount>/<path>`` and does the rest through
:class:`~controlplane.dataplane.local_store.LocalStore` (all-or-nothing
writes, the sha256 kept beside the file).

Workers write into the claim too, so whatever lies on it is untrusted: a
path with ``.``, ``..`` or empty segments is refused before it touches the
disk, and a path with a symlink anywhere below the mount is refused, so a
link a worker planted cannot make the control plane read, write or delete
outside the claim, nor in another tenant's folder on it. (A link swapped in
between that check and the call itself is not caught: closing that needs
``openat2(RESOLVE_BENEATH)``, which Python does not offer.) Refusals are
:class:`~controlplane.dataplane.errors.StoreError` (not transient), never
``ValueError``, which :meth:`ObjectStore.put` keeps for a sha256 mismatch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.local_store import LocalStore
from controlplane.dataplane.objects import ObjectInfo

__all__ = ["MOUNTS_VARIABLE", "PvcStore", "claim_of", "is_claim_name"]

#: the setting that says where the control plane mounts each claim
MOUNTS_VARIABLE = "FUSIONPLANE_PVC_MOUNTS"
_SCHEME = "pvc://"
#: a PersistentVolumeClaim's name is a DNS-1123 subdomain: dot-separated labels of [a-z0-9-], at most 253
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: errors of the mount that no retry mends (the path or its permissions are wrong)
_LASTING = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


def is_claim_name(value: str) -> bool:
    """True when ``value`` can name a PersistentVolumeClaim (a DNS-1123 subdomain)."""
    return 0 < len(value) <= 253 and all(_LABEL.match(part) for part in value.split("."))


def claim_of(uri: str) -> str | None:
    """The claim a ``pvc://<claim>/...`` URI names; None for any other URI."""
    if not uri.startswith(_SCHEME):
        return None
    return uri[len(_SCHEME) :].partition("/")[0]


def _failed(exc: OSError, what: str) -> StoreError:
    # a stale NFS handle, EIO or a full volume may pass; a missing path or a refused permission will not
    return StoreError(f"{what}: {exc.strerror or type(exc).__name__}", transient=not isinstance(exc, _LASTING))


class PvcStore:
    """The objects of one claim, as files under the control plane's mount of it."""

    def __init__(self, *, claim: str, mount: Path, files: LocalStore | None = None) -> None:
        self.claim = claim
        self.mount = mount
        self._files = files or LocalStore()

    def _path(self, uri: str, *, folder: bool = False) -> Path:
        """The file (or, with ``folder``, the folder) ``uri`` names under the mount, every link resolved.

        ``StoreError`` when the URI is of another claim, has a ``.``, ``..`` or
        empty segment (an absolute path among them) or a NUL, or when a
        symlink lies anywhere on its way below the mount.
        """
        prefix = f"{_SCHEME}{self.claim}/"
        if not uri.startswith(prefix):
            raise StoreError(f"{uri!r} is not on claim {self.claim!r}", transient=False)
        rest = uri[len(prefix) :]
        if folder:
            rest = rest.removesuffix("/")
        segments = rest.split("/") if rest else []
        if (not segments and not folder) or any(s in ("", ".", "..") or "\x00" in s for s in segments):
            raise StoreError(f"{uri!r}: not a plain path inside claim {self.claim!r}", transient=False)
        root = Path(os.path.realpath(self.mount))
        path = root.joinpath(*segments)
        # any link on the way is refused, not only one that leaves the mount: a worker's link to another
        # tenant's folder on the same claim would otherwise have the control plane write or delete there
        if Path(os.path.realpath(path)) != path:
            raise StoreError(f"{uri!r}: a link on the way (refused on a shared claim)", transient=False)
        return path

    def _uri(self, path: str) -> str:
        """The ``pvc://`` URI of a file under the mount (as :meth:`list` found it)."""
        relative = os.path.relpath(path, os.path.realpath(self.mount))
        return f"{_SCHEME}{self.claim}/{relative}"

    def put(self, uri: str, data: BinaryIO, *, sha256: str, size: int) -> ObjectInfo:
        path = self._path(uri)
        try:
            info = self._files.put(str(path), data, sha256=sha256, size=size)
        except OSError as exc:
            raise _failed(exc, f"writing {uri}") from exc
        return ObjectInfo(uri=uri, size=info.size, sha256=info.sha256)

    def head(self, uri: str) -> ObjectInfo | None:
        info = self._files.head(str(self._path(uri)))
        return None if info is None else ObjectInfo(uri=uri, size=info.size, sha256=info.sha256)

    def open_read(self, uri: str, *, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._path(uri)
        try:
            chunks = self._files.open_read(str(path), start=start, end=end)
        except OSError as exc:
            raise _failed(exc, f"reading {uri}") from exc
        return self._translated(chunks, f"reading {uri}")

    @staticmethod
    def _translated(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
        """``chunks``, with a failure of the mount part-way through as a ``StoreError``."""
        try:
            yield from chunks
        except OSError as exc:
            raise _failed(exc, what) from exc

    def presign(self, uri: str, *, seconds: int) -> str | None:
        return None  # a claim has no URL of its own: the API streams what it serves

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = self._path(prefix, folder=True)
        try:
            for info in self._files.list(str(folder)):
                yield ObjectInfo(uri=self._uri(info.uri), size=info.size, sha256=info.sha256)
        except OSError as exc:
            raise _failed(exc, f"listing {prefix}") from exc

    def delete_prefix(self, prefix: str) -> int:
        folder = self._path(prefix, folder=True)
        if folder == Path(os.path.realpath(self.mount)):
            # retention deletes one task's inputs; never the whole claim, which workers share
            raise StoreError(f"{prefix!r}: refusing to empty the whole claim", transient=False)
        try:
            return self._files.delete_prefix(str(folder))
        except OSError as exc:
            raise _failed(exc, f"deleting {prefix}") from exc
