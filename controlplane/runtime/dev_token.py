"""The development admin token ``serve`` mints on first start: ``var/dev-token``, mode 0600.

The token itself never goes to the log or the terminal: a log is read by
more people, and kept longer, than ``var/``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from controlplane.api.auth import TokenRegistry, create_token
from controlplane.config import Settings

__all__ = ["DevToken", "ensure_dev_token", "write_private"]


@dataclass(frozen=True, kw_only=True)
class DevToken:
    """Where the development token is, and whether this start minted it."""

    path: Path
    minted: bool

    def works(self, tokens: TokenRegistry) -> bool:
        """False when the file's token is no longer in the tokens file (revoked, or another file)."""
        try:
            return tokens.authenticate(self.path.read_text(encoding="utf-8").strip()) is not None
        except OSError:
            return False


def write_private(path: Path, text: str) -> None:
    """Write ``path`` atomically, mode 0600 from its creation (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def ensure_dev_token(settings: Settings) -> DevToken:
    """The development admin token's file ``var/dev-token``, minted (tenant dev, role admin) when absent."""
    path = settings.var_dir / "dev-token"
    if path.is_file():
        return DevToken(path=path, minted=False)
    token = create_token(settings.tokens_file, tenant="dev", role="admin", name="")  # named dev-admin-<id>
    write_private(path, token + "\n")
    return DevToken(path=path, minted=True)
