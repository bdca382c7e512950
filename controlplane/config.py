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

from faceswap.netguard import AllowedHosts
from providers.local_env import PASS_ENV_VARIABLE, parse_pass_env

__all__ = [
    "DEFAULT_STORAGE_PATH",
    "DEFAULT_UPLOAD_QUOTA_BYTES",
    "DEFAULT_UPLOAD_RETENTION_S",
    "Settings",
    "is_loopback",
]

DEFAULT_UPLOAD_QUOTA_BYTES = 10 << 30
DEFAULT_UPLOAD_RETENTION_S = 7 * 86_400.0
MAX_UPLOAD_RETENTION_S = 366 * 86_400.0
#: the storage allow-lists shipped with the code (public web hosts for every tenant, no s3)
DEFAULT_STORAGE_PATH = Path(__file__).resolve().parents[1] / "policies" / "storage.json"


def _paths(value: str) -> tuple[Path, ...]:
    return tuple(Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p)


def _seconds(env: Mapping[str, str], name: str, default: float, *, maximum: float = 86_400) -> float:
    """A positive number of seconds from ``env[name]``; a bad value is refused naming the variable."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: not a number of seconds: {raw!r}") from None
    if not 0 < value <= maximum:
        raise ValueError(f"{name}: must be more than 0 and at most {maximum:g} seconds, not {raw}")
    return value


def _byte_count(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive whole number of bytes from ``env[name]``; a bad value is refused naming the variable."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: not a whole number of bytes: {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name}: must be at least 1 byte, not {raw}")
    return value


def _storage_file(env: Mapping[str, str]) -> Path | None:
    """``FUSIONPLANE_STORAGE_FILE``, else the shipped ``policies/storage.json`` if present, else None."""
    named = env.get("FUSIONPLANE_STORAGE_FILE")
    if named:
        return Path(named).expanduser()
    return DEFAULT_STORAGE_PATH if DEFAULT_STORAGE_PATH.is_file() else None


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
    #: bytes a tenant may hold under its upload folder (``<first input root>/<tenant>/``)
    upload_quota_bytes: int = DEFAULT_UPLOAD_QUOTA_BYTES
    #: how long an upload folder no unfinished task reads from is kept
    upload_retention_seconds: float = DEFAULT_UPLOAD_RETENTION_S
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
    #: per-tenant s3 prefixes and web hosts (docs/security.md); None: public web hosts, no s3
    storage_file: Path | None = None
    #: internal hosts (``host`` or ``host:port``) http(s) inputs may come from despite the address rules
    fetch_allow_hosts: tuple[str, ...] = ()
    #: the largest input a worker downloads (checked while reading)
    fetch_max_bytes: int = 2 << 30
    fetch_connect_timeout_s: float = 10.0
    fetch_read_timeout_s: float = 60.0
    #: how long a submission waits to resolve an input's host name (no answer: accepted, the worker re-checks)
    submit_resolve_timeout_s: float = 2.0
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
            "upload_quota_bytes": _byte_count(env, "FUSIONPLANE_UPLOAD_QUOTA_BYTES", DEFAULT_UPLOAD_QUOTA_BYTES),
            "upload_retention_seconds": _seconds(
                env, "FUSIONPLANE_UPLOAD_RETENTION_S", DEFAULT_UPLOAD_RETENTION_S, maximum=MAX_UPLOAD_RETENTION_S
            ),
            "storage_file": _storage_file(env),
            "fetch_allow_hosts": tuple(env.get("FUSIONPLANE_FETCH_ALLOW_HOSTS", "").replace(",", " ").split()),
            "fetch_max_bytes": _byte_count(env, "FUSIONPLANE_FETCH_MAX_BYTES", 2 << 30),
            "fetch_connect_timeout_s": _seconds(env, "FUSIONPLANE_FETCH_CONNECT_TIMEOUT_S", 10.0),
            "fetch_read_timeout_s": _seconds(env, "FUSIONPLANE_FETCH_READ_TIMEOUT_S", 60.0),
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
        try:
            AllowedHosts.parse(self.fetch_allow_hosts)
        except ValueError as exc:
            raise ValueError(f"FUSIONPLANE_FETCH_ALLOW_HOSTS: {exc}") from None
