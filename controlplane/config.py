"""Control-plane settings: environment first (``FUSIONPLANE_*``), embedded defaults otherwise.

With nothing configured the control plane runs on SQLite under ``./var``,
policies from ``policies/``, the local provider as the private target, and
clouds disabled.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from providers.local_env import PASS_ENV_VARIABLE, parse_pass_env

__all__ = ["Settings", "is_loopback"]


def _paths(value: str) -> tuple[Path, ...]:
    return tuple(Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of seconds from ``env[name]``; a bad value is refused naming the variable."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: not a number of seconds: {raw!r}") from None
    if not 0 < value <= 86_400:
        raise ValueError(f"{name}: must be more than 0 and at most 86400 seconds, not {raw}")
    return value


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only binds where insecure mode is allowed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class Settings:
    var_dir: Path = Path("var")
    database_url: str = ""
    policy_file: Path = Path("policies/default.json")
    tokens_file: Path = Path("var/tokens.json")
    #: local paths a task may read; symlinks are resolved before the check
    input_roots: tuple[Path, ...] = ()
    output_root: Path = Path("var/outputs")
    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 2 << 30
    host: str = "127.0.0.1"
    port: int = 8080
    #: URL workers use to reach the API (callbacks); default http://HOST:PORT
    public_url: str = ""
    #: no auth at all; refused unless bound to loopback
    insecure_dev: bool = False
    local_slots: int = 2
    #: argv prefix of the local provider's worker (shell words); empty: this interpreter's ``worker run``
    local_worker_command: tuple[str, ...] = ()
    #: variables passed to local workers as they are, beyond their minimal environment (providers/local_env.py)
    local_worker_env: tuple[str, ...] = ()
    #: how long a scheduler's leadership lasts without renewal (several ``serve`` replicas on one database)
    leader_lease_seconds: float = 15.0
    #: how often the scheduler reconciles what each provider owns with the store
    reconcile_seconds: float = 60.0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        var_dir = Path(env.get("FUSIONPLANE_VAR_DIR", "var"))
        values: dict[str, object] = {
            "var_dir": var_dir,
            "database_url": env.get("FUSIONPLANE_DATABASE_URL", ""),
            "policy_file": Path(env.get("FUSIONPLANE_POLICY_FILE", "policies/default.json")),
            "tokens_file": Path(env.get("FUSIONPLANE_TOKENS_FILE", str(var_dir / "tokens.json"))),
            "input_roots": _paths(env.get("FUSIONPLANE_INPUT_ROOTS", str(var_dir / "inputs"))),
            "output_root": Path(env.get("FUSIONPLANE_OUTPUT_ROOT", str(var_dir / "outputs"))).resolve(),
            "max_body_bytes": int(env.get("FUSIONPLANE_MAX_BODY_BYTES", str(1 << 20))),
            "max_upload_bytes": int(env.get("FUSIONPLANE_MAX_UPLOAD_BYTES", str(2 << 30))),
            "public_url": env.get("FUSIONPLANE_PUBLIC_URL", ""),
            "local_slots": int(env.get("FUSIONPLANE_LOCAL_SLOTS", "2")),
            "local_worker_command": tuple(shlex.split(env.get("FUSIONPLANE_LOCAL_WORKER_COMMAND", ""))),
            "local_worker_env": parse_pass_env(env.get(PASS_ENV_VARIABLE, "")),
            "leader_lease_seconds": _seconds(env, "FUSIONPLANE_LEADER_LEASE_S", 15.0),
            "reconcile_seconds": _seconds(env, "FUSIONPLANE_RECONCILE_S", 60.0),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def callback_base(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def check(self) -> None:
        """Refuse settings that would be unsafe to serve with."""
        if self.insecure_dev and not is_loopback(self.host):
            raise ValueError(f"--insecure-dev is only allowed on a loopback address, not {self.host}")
        if self.max_body_bytes < 1024:
            raise ValueError("FUSIONPLANE_MAX_BODY_BYTES must be at least 1024")
