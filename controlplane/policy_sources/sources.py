"""Policies from JSON files: one-off loads, and the file source the control plane watches.

Consul KV is the other source (consul_source.py); the control plane uses it
when ``CONSUL_HTTP_ADDR`` is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from controlplane.domain.fields import loads_document, read_document
from controlplane.policy.model import Policy, PolicyError
from controlplane.policy.parse import parse_policy
from controlplane.policy.seed import NO_SEED_CLOUDS, SeedClouds
from controlplane.policy_sources.active import PolicyDocuments

__all__ = ["DEFAULT_POLICY_PATH", "MAX_POLICY_BYTES", "FilePolicySource", "load_policy_file", "loads_policy"]


def _shipped_default() -> Path:
    """The default policy shipped as package data (``policies/default.json`` in a checkout).

    In a checkout the package's ``default.json`` is a link to
    ``policies/default.json``, the one copy in git; resolving it makes the
    file source watch that file and its ``policies/tenants/`` overlays. In an
    installed wheel it is the file itself.
    """
    shipped = resources.files("controlplane.policy_sources") / "default.json"
    # zip_safe = False: an install is always unpacked, so the policy is a file on disk
    if not isinstance(shipped, Path):
        raise RuntimeError(f"the default policy is not a file on disk: {shipped}")
    return shipped.resolve()


#: the embedded default, used when nothing else is configured
DEFAULT_POLICY_PATH = _shipped_default()
#: a policy is a small document; anything bigger is a mistake
MAX_POLICY_BYTES = 1 << 20


def loads_policy(text: str | bytes, *, seed_clouds: SeedClouds = NO_SEED_CLOUDS) -> Policy:
    """Parse a policy from JSON text; :class:`PolicyError` names the bad field's JSON path."""
    document = loads_document(text, max_bytes=MAX_POLICY_BYTES, error=PolicyError)
    return parse_policy(document, seed_clouds=seed_clouds)


def load_policy_file(path: Path | str, *, seed_clouds: SeedClouds = NO_SEED_CLOUDS) -> Policy:
    """Read and validate a policy file.

    Errors are :class:`PolicyError` whose message starts with the JSON path of
    the bad field (``targets[1].provider: must be one of ...``); an unreadable
    or malformed file names the file instead.
    """
    return read_document(path, lambda raw: loads_policy(raw, seed_clouds=seed_clouds), error=PolicyError)


def _read_json(path: Path) -> Any:
    raw = path.read_bytes()
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError("", f"{path} is larger than {MAX_POLICY_BYTES} bytes")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise PolicyError("", f"{path} is not valid JSON: {exc}") from exc


class FilePolicySource:
    """The policy file and, next to it, ``tenants/<tenant>.json`` overlays.

    Changes are found by polling ``stat`` (modification time, size, inode):
    cheap, and it sees editors that replace the file by renaming as well as
    in-place writes, on every filesystem, without inotify.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def name(self) -> str:
        return f"file:{self.path}"

    @property
    def tenants_dir(self) -> Path:
        return self.path.parent / "tenants"

    def _files(self) -> list[Path]:
        overlays = sorted(self.tenants_dir.glob("*.json")) if self.tenants_dir.is_dir() else []
        return [self.path, *overlays]

    def fingerprint(self) -> tuple[tuple[str, int, int, int], ...]:
        """Changes whenever the policy or an overlay is written, replaced, added or removed."""
        marks = []
        for path in self._files():
            try:
                info = path.stat()
            except OSError:
                marks.append((str(path), -1, -1, -1))
                continue
            marks.append((str(path), info.st_mtime_ns, info.st_size, info.st_ino))
        return tuple(marks)

    def read(self) -> PolicyDocuments:
        """Both documents; OSError or :class:`PolicyError` (naming the file) when one is unreadable."""
        base = _read_json(self.path)
        overlays = {path.stem: _read_json(path) for path in self._files()[1:]}
        return PolicyDocuments(base=base, overlays=overlays, source=self.name)

    def write(self, value: bytes, *, expected_version: str | None) -> bool:
        """Replace the file atomically if its content still has ``expected_version`` (sha256; None: absent).

        The check and the rename are not one atomic step across processes;
        the window is a few microseconds on one machine, and Consul is the
        source to use where several operators push at once.
        """
        current = self.current_version()
        if current != expected_version:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(value)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return True

    def current_version(self) -> str | None:
        """sha256 of the file's bytes, or None when it does not exist."""
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return None
