"""Where a tenant's local files live: ``<root>/<tenant>/``, checked after resolving symlinks.

A task may read local files only under ``<input root>/<tenant>/`` and write
only under ``<output root>/<tenant>/`` (and its checkpoints under
``<checkpoint root>/<tenant>/``), where ``<tenant>`` is the task's own
tenant. The check resolves every symlink and ``..`` first, so a link planted
in one tenant's folder that points into another's is refused like the other
tenant's path itself. The API applies it at submit (a 422 naming the field)
and the executor again before every launch (``invalid_spec``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TenantStorage", "local_path", "resolved_inside", "tenant_folder"]

_REMOTE = ("s3://", "az://", "https://", "http://")


def local_path(uri: str) -> Path | None:
    """The local path a task URI names (a plain path or ``file://``); None for a remote URI."""
    if uri.startswith(_REMOTE):
        return None
    return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


def tenant_folder(root: Path | str, tenant: str) -> Path:
    """``<root>/<tenant>`` with the root resolved; ``ValueError`` for a tenant that is not one folder name."""
    # tenant names are checked where tokens are made; this is the last line against "..", "a/b" and the like
    if tenant in ("", ".", "..") or "/" in tenant or "\x00" in tenant:
        raise ValueError(f"tenant {tenant!r} cannot name a storage folder")
    return Path(os.path.realpath(root)) / tenant


def resolved_inside(path: Path, folder: Path) -> Path | None:
    """``path`` with every symlink and ``..`` resolved, if that lies strictly under ``folder``; else None."""
    real = Path(os.path.realpath(path))
    return real if folder in real.parents else None


@dataclass(frozen=True, kw_only=True)
class TenantStorage:
    """The local roots tasks read from and write to; each tenant owns ``<root>/<tenant>/`` of each."""

    input_roots: tuple[Path, ...]
    output_root: Path
    checkpoint_root: Path | None = None

    def readable(self, uri: str, *, tenant: str) -> bool:
        """A remote URI, or a local path inside one of the tenant's input folders."""
        path = local_path(uri)
        if path is None:
            return True
        return any(resolved_inside(path, tenant_folder(root, tenant)) for root in self.input_roots)

    def writable(self, uri: str, *, tenant: str, root: Path | None = None) -> bool:
        """A remote URI, or a local path inside the tenant's folder of ``root`` (default: the output root)."""
        path = local_path(uri)
        if path is None:
            return True
        return resolved_inside(path, tenant_folder(root or self.output_root, tenant)) is not None

    def refusal(self, *, tenant: str, source: str, target: str, output: str, checkpoint: str | None) -> str | None:
        """Why a task's local paths are not all its tenant's (the first problem, naming the field); else None."""
        try:
            for field, uri in (("source", source), ("target", target)):
                if not self.readable(uri, tenant=tenant):
                    return f"{field}: is outside tenant {tenant}'s input folders"
            if not self.writable(output, tenant=tenant):
                return f"output: is outside tenant {tenant}'s output folder"
            root = self.checkpoint_root
            if checkpoint is not None and root is not None and not self.writable(checkpoint, tenant=tenant, root=root):
                return f"checkpoint: is outside tenant {tenant}'s checkpoint folder"
        except ValueError as exc:
            return str(exc)
        return None
