"""Control-plane settings: environment first (``FUSIONPLANE_*``), embedded defaults otherwise.

With nothing configured the control plane runs on SQLite under ``./var``,
the default policy shipped in the package (``policies/default.json`` in a
checkout), the local provider as the private target, and
clouds disabled.

This is the one module of the control plane and its CLI that reads the
environment (``tests/unit/test_env_in_one_place.py`` holds it to that): every
other module receives a :class:`Settings` (or one of its parts) from
``controlplane.runtime`` or the command that runs it. Its parts:

- :class:`Settings`: the API, the store, local paths and the local provider;
- :class:`CloudSettings`: what every cloud provider launches and tags;
- :class:`SignalSettings`: the signal pollers' schedules and endpoints;
- :class:`ConsulSettings`: Consul as the policy source;
- :class:`SeedClouds` (``seed_clouds_from_env``): the seed form's built-in clouds;
- :class:`ClientSettings`: where ``fusionctl`` finds the API and keeps its own state;
- :class:`LocalRunSettings`: a swap ``fusionctl`` runs on this machine (``swap``, ``worker run``).
"""

from __future__ import annotations

import ipaddress
import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane import __version__
from controlplane.dataplane.pvc_store import MOUNTS_VARIABLE, is_claim_name
from controlplane.policy.seed import BuiltinCloud, SeedClouds
from controlplane.policy_sources.consul_source import DEFAULT_POLICY_KEY
from controlplane.policy_sources.sources import DEFAULT_POLICY_PATH
from faceswap.netguard import AllowedHosts
from providers.local_env import PASS_ENV_VARIABLE, parse_pass_env

__all__ = [
    "DEFAULT_OUTPUT_LINK_S",
    "DEFAULT_OWNER",
    "DEFAULT_POLICY_KEY",
    "DEFAULT_STAGED_RETENTION_S",
    "DEFAULT_STORAGE_PATH",
    "DEFAULT_UPLOAD_CHUNK_MAX_BYTES",
    "DEFAULT_UPLOAD_EXPIRY_S",
    "DEFAULT_UPLOAD_QUOTA_BYTES",
    "DEFAULT_UPLOAD_RETENTION_S",
    "DEFAULT_WORKER_IMAGE",
    "ClientSettings",
    "CloudSettings",
    "ConsulSettings",
    "LocalRunSettings",
    "Settings",
    "SignalSettings",
    "WebhookDeliverySettings",
    "is_loopback",
    "seed_clouds_from_env",
]

DEFAULT_UPLOAD_QUOTA_BYTES = 10 << 30
DEFAULT_UPLOAD_RETENTION_S = 7 * 86_400.0
#: the most one tus PATCH may carry; the CLI sends 8 MiB
DEFAULT_UPLOAD_CHUNK_MAX_BYTES = 64 << 20
#: how long an unfinished resumable upload waits for its next chunk before the retention job removes it
DEFAULT_UPLOAD_EXPIRY_S = 86_400.0
MAX_UPLOAD_RETENTION_S = 366 * 86_400.0
DEFAULT_STAGED_RETENTION_S = 86_400.0
DEFAULT_OUTPUT_LINK_S = 300
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


def _flag(env: Mapping[str, str], name: str) -> bool:
    """An on/off setting: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``/unset; else refused."""
    raw = env.get(name, "").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: not on or off: {raw!r} (use 1 or 0)")


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


def _pvc_mounts(env: Mapping[str, str]) -> dict[str, Path]:
    """``FUSIONPLANE_PVC_MOUNTS``: ``claim=/mount/path`` pairs, comma-separated; a bad one is refused naming
    the variable. Paths are taken as written (``..`` refused, not resolved): they are mounts, not links."""
    mounts: dict[str, Path] = {}
    for entry in (item.strip() for item in env.get(MOUNTS_VARIABLE, "").split(",")):
        if not entry:
            continue
        claim, sep, path = (part.strip() for part in entry.partition("="))
        if not sep or not claim or not path:
            raise ValueError(f"{MOUNTS_VARIABLE}: {entry!r} is not claim=/mount/path")
        if not is_claim_name(claim):
            raise ValueError(f"{MOUNTS_VARIABLE}: {claim!r} is not a PersistentVolumeClaim name (a DNS-1123 subdomain)")
        segments = path.rstrip("/").split("/")
        if not path.startswith("/") or path.strip("/") == "" or any(s in ("", ".", "..") for s in segments[1:]):
            raise ValueError(f"{MOUNTS_VARIABLE}: {claim}={path}: the mount must be an absolute path other than /")
        if claim in mounts:
            raise ValueError(f"{MOUNTS_VARIABLE}: claim {claim!r} is named twice")
        mount = Path(path.rstrip("/"))
        if mount in mounts.values():
            raise ValueError(f"{MOUNTS_VARIABLE}: {mount} is named for two claims")
        mounts[claim] = mount
    return mounts


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


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


# -- the seed form's built-in clouds ----------------------------------------------------------------
#
# A seed document (``task_rules`` only) names no cloud settings; these variables give its built-in
# ``aws`` and ``azure`` targets what a launch needs (docs/policies.md, "The seed form"). Unset, a
# built-in cloud is ``not_configured``: plans leave it out and its tasks run on ``local``.
#
# | variable | becomes |
# |---|---|
# | ``FUSIONPLANE_AWS_LAUNCH_TEMPLATE`` | ``settings.launch_template`` (a name or an ``lt-`` id) |
# | ``FUSIONPLANE_AWS_IMAGE_ID`` | ``settings.image_id`` (an ``ami-`` id; one of the two is needed) |
# | ``FUSIONPLANE_AWS_SUBNETS`` | ``settings.subnets`` (comma-separated) |
# | ``FUSIONPLANE_AWS_SECURITY_GROUPS`` | ``settings.security_group_ids`` (comma-separated) |
# | ``FUSIONPLANE_AWS_INSTANCE_PROFILE`` | ``settings.iam_instance_profile`` |
# | ``FUSIONPLANE_AWS_REGION`` | the region (default us-east-1) |
# | ``FUSIONPLANE_AWS_MAX_PRICE_USD_H`` | ``max_price_usd_h``: the budget threshold for urgent or peak work |
# | ``FUSIONPLANE_AZURE_<KEY>`` for ``SUBSCRIPTION_ID``, ``RESOURCE_GROUP``, ``SUBNET_ID``, ``IMAGE``, |
# | ``SSH_PUBLIC_KEY`` | the ``settings`` keys of the same names, lower case (all needed) |
# | ``FUSIONPLANE_AZURE_REGION`` | the region (default eastus) |
# | ``FUSIONPLANE_AZURE_MAX_PRICE_USD_H`` | ``max_price_usd_h`` |

_AWS_TEXT = {
    "FUSIONPLANE_AWS_LAUNCH_TEMPLATE": "launch_template",
    "FUSIONPLANE_AWS_IMAGE_ID": "image_id",
    "FUSIONPLANE_AWS_INSTANCE_PROFILE": "iam_instance_profile",
}
_AWS_LISTS = {"FUSIONPLANE_AWS_SUBNETS": "subnets", "FUSIONPLANE_AWS_SECURITY_GROUPS": "security_group_ids"}
_AZURE_TEXT = {
    f"FUSIONPLANE_AZURE_{key.upper()}": key
    for key in ("subscription_id", "resource_group", "subnet_id", "image", "ssh_public_key")
}


def _price(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: not a price in USD per hour: {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a positive number of USD per hour, not {raw}")
    return value


def _cloud(env: Mapping[str, str], prefix: str, text: Mapping[str, str], lists: Mapping[str, str]) -> BuiltinCloud:
    settings: dict[str, Any] = {key: env[name].strip() for name, key in text.items() if env.get(name, "").strip()}
    for name, key in lists.items():
        items = [item.strip() for item in env.get(name, "").split(",") if item.strip()]
        if items:
            settings[key] = items
    storage = {
        key: env[name].strip()
        for name, key in ((f"{prefix}STORAGE_URI", "uri"), (f"{prefix}STORAGE_ENDPOINT_URL", "endpoint_url"))
        if env.get(name, "").strip()
    }
    return BuiltinCloud(
        settings=settings,
        max_price_usd_h=_price(env, f"{prefix}MAX_PRICE_USD_H"),
        region=env.get(f"{prefix}REGION", "").strip() or None,
        storage=storage,
    )


def seed_clouds_from_env(env: Mapping[str, str] | None = None) -> SeedClouds:
    """Both built-in clouds from ``env`` (default: this process's); a bad price raises ValueError naming it."""
    env = _env(env)
    return SeedClouds(
        aws=_cloud(env, "FUSIONPLANE_AWS_", _AWS_TEXT, _AWS_LISTS),
        azure=_cloud(env, "FUSIONPLANE_AZURE_", _AZURE_TEXT, {}),
    )


# -- the cloud providers -----------------------------------------------------------------------------

DEFAULT_WORKER_IMAGE = f"fusionplane-worker:{__version__}-gpu"
DEFAULT_OWNER = "fusionplane"


@dataclass(frozen=True, kw_only=True)
class CloudSettings:
    """What Kubernetes, EC2 Spot and Azure Spot launch and how they tag it.

    Credentials never pass through here (bar a Blob connection string, below):
    boto3's chain, azure-identity's ``DefaultAzureCredential`` and kubeconfig (``KUBECONFIG``, read by
    ``providers/kubeconfig.py`` as the kubernetes client would) or in-cluster
    configuration find them. EC2 takes ``AWS_ENDPOINT_URL`` /
    ``AWS_ENDPOINT_URL_EC2``, which boto3 reads itself.
    """

    #: ``FUSIONPLANE_WORKER_IMAGE``: the worker container on every backend (a target's ``settings.worker_image`` wins)
    worker_image: str = DEFAULT_WORKER_IMAGE
    #: ``FUSIONPLANE_WORKER_GPUS``: False (``0``) for the CPU image, no ``--gpus all`` on VMs
    worker_gpus: bool = True
    #: ``FUSIONPLANE_OWNER``: the owner tag/label on every resource, what ``list_owned`` and reconciliation
    #: look for; keep it stable across restarts and distinct per control-plane installation
    owner: str = DEFAULT_OWNER
    #: ``FUSIONPLANE_AZURE_ARM_URL``: the ARM endpoint (None: the public cloud's; tests point it at the fake)
    azure_arm_url: str | None = None
    #: ``FUSIONPLANE_MODELS_MANIFEST``: a models manifest with a ``source`` per model; EC2 and Azure VMs fill
    #: their model cache from it (``fusionctl models fill``) before the worker starts (None: they do not)
    models_manifest: Path | None = None
    #: ``AZURE_STORAGE_CONNECTION_STRING``: Blob storage with an account key (Azurite in tests); the one
    #: credential that passes through here, because the Blob SDK does not read it itself; kept out of reprs
    blob_connection_string: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CloudSettings:
        env = _env(env)
        return cls(
            worker_image=env.get("FUSIONPLANE_WORKER_IMAGE") or DEFAULT_WORKER_IMAGE,
            worker_gpus=env.get("FUSIONPLANE_WORKER_GPUS", "1") != "0",
            owner=env.get("FUSIONPLANE_OWNER") or DEFAULT_OWNER,
            azure_arm_url=env.get("FUSIONPLANE_AZURE_ARM_URL") or None,
            models_manifest=Path(named) if (named := env.get("FUSIONPLANE_MODELS_MANIFEST", "").strip()) else None,
            blob_connection_string=env.get("AZURE_STORAGE_CONNECTION_STRING") or None,
        )


# -- the signal pollers ------------------------------------------------------------------------------

#: the prefix of every poller schedule variable: ``FUSIONPLANE_SIGNALS_<SOURCE>_<INTERVAL|TIMEOUT|JITTER>_S``
SIGNALS_PREFIX = "FUSIONPLANE_SIGNALS_"
#: the setting that turns pollers off (comma-separated source names)
SIGNALS_OFF_VARIABLE = "FUSIONPLANE_SIGNALS_OFF"
SIGNAL_RETENTION_VARIABLE = "FUSIONPLANE_SIGNAL_RETENTION_HOURS"


@dataclass(frozen=True, kw_only=True)
class SignalSettings:
    """The signal pollers' settings as the operator wrote them.

    Schedules, the sources turned off and the retention stay text here:
    ``controlplane.runtime.signals`` knows each source's defaults and TTL, and
    checks them there, naming the variable.
    """

    #: every ``FUSIONPLANE_SIGNALS_<SOURCE>_<INTERVAL|TIMEOUT|JITTER>_S`` that is set, by name
    schedules: Mapping[str, str] = field(default_factory=dict)
    #: ``FUSIONPLANE_SIGNALS_OFF``: source names, comma-separated
    off: str = ""
    #: ``FUSIONPLANE_PROMETHEUS_URL``: the Prometheus source is on when set
    prometheus_url: str = ""
    #: ``FUSIONPLANE_AWS_ENDPOINT_URL``: the EC2 endpoint spot prices are read from ("" : AWS's)
    aws_endpoint_url: str = ""
    #: ``FUSIONPLANE_AZURE_PRICES_URL``: the Azure retail prices API ("": the public one)
    azure_prices_url: str = ""
    #: ``FUSIONPLANE_SIGNAL_RETENTION_HOURS``: how long signal history is kept ("": the default)
    retention_hours: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SignalSettings:
        env = _env(env)
        return cls(
            schedules={
                name: value
                for name, value in env.items()
                if name.startswith(SIGNALS_PREFIX) and name != SIGNALS_OFF_VARIABLE
            },
            off=env.get(SIGNALS_OFF_VARIABLE, ""),
            prometheus_url=env.get("FUSIONPLANE_PROMETHEUS_URL", ""),
            aws_endpoint_url=env.get("FUSIONPLANE_AWS_ENDPOINT_URL", ""),
            azure_prices_url=env.get("FUSIONPLANE_AZURE_PRICES_URL", ""),
            retention_hours=env.get(SIGNAL_RETENTION_VARIABLE, ""),
        )


# -- Consul ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ConsulSettings:
    """Consul as the policy source, configured as for the consul CLI.

    py-consul reads ``CONSUL_HTTP_ADDR`` (and ``CONSUL_HTTP_SSL``) itself when
    a client is made; ``address`` is read here to decide whether Consul is the
    source at all and to name it in messages.
    """

    #: ``CONSUL_HTTP_ADDR``: Consul is the policy source when set
    address: str = ""
    #: ``CONSUL_HTTP_TOKEN``
    token: str | None = None
    #: ``FUSIONPLANE_POLICY_KEY``: the base policy's key (overlays under ``<key>/tenants/``)
    policy_key: str = DEFAULT_POLICY_KEY

    @property
    def configured(self) -> bool:
        return bool(self.address)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsulSettings:
        env = _env(env)
        return cls(
            address=env.get("CONSUL_HTTP_ADDR", ""),
            token=env.get("CONSUL_HTTP_TOKEN") or None,
            policy_key=env.get("FUSIONPLANE_POLICY_KEY", DEFAULT_POLICY_KEY).strip("/") or DEFAULT_POLICY_KEY,
        )


# -- fusionctl's own settings -----------------------------------------------------------------------

DEFAULT_API_URL = "http://127.0.0.1:8080"
#: seconds between SIGTERM and a forced exit 75, for work that cannot stop mid-way
#: (a TensorRT engine build, a download). Azure gives 30 s notice, AWS 120 s.
DEFAULT_STOP_GRACE_S = 20.0


@dataclass(frozen=True, kw_only=True)
class ClientSettings:
    """What ``fusionctl`` reads for itself as a client of the API (``--url`` / ``--token`` win)."""

    #: ``FUSIONPLANE_URL``: the API's base URL
    url: str = DEFAULT_API_URL
    #: ``FUSIONPLANE_TOKEN``: the bearer token ("": none)
    token: str = ""
    #: ``XDG_STATE_HOME`` (default ``~/.local/state``): where ``fusionctl policy`` remembers what you last saw
    state_home: Path = field(default_factory=lambda: Path.home() / ".local" / "state")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        env = _env(env)
        return cls(
            url=env.get("FUSIONPLANE_URL") or DEFAULT_API_URL,
            token=env.get("FUSIONPLANE_TOKEN") or "",
            state_home=Path(env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")),
        )


@dataclass(frozen=True, kw_only=True)
class LocalRunSettings:
    """A swap ``fusionctl`` runs on this machine (``swap``, ``worker run``)."""

    #: ``FUSIONPLANE_STOP_GRACE_S``: seconds from SIGTERM to a forced exit 75
    stop_grace_s: float = DEFAULT_STOP_GRACE_S
    #: ``FUSIONPLANE_FETCH_ALLOW_HOSTS``: internal hosts ``swap`` may fetch from despite the address rules
    fetch_allow_hosts: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LocalRunSettings:
        env = _env(env)
        return cls(
            stop_grace_s=float(env.get("FUSIONPLANE_STOP_GRACE_S", DEFAULT_STOP_GRACE_S)),
            fetch_allow_hosts=tuple(env.get("FUSIONPLANE_FETCH_ALLOW_HOSTS", "").replace(",", " ").split()),
        )


# -- webhooks ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WebhookDeliverySettings:
    """How task events are POSTed to submitters (docs/api.md, "Webhooks")."""

    #: ``FUSIONPLANE_WEBHOOKS_FILE``: per-tenant default URL and signing secrets (controlplane/policy/webhooks.py)
    file: Path = Path("var/webhooks.json")
    #: ``FUSIONPLANE_WEBHOOK_ALLOW_HOSTS``: internal hosts (``host`` or ``host:port``) a notify URL may name
    allow_hosts: tuple[str, ...] = ()
    #: the whole try: connect, send, the answer's head and at most ``max_response_bytes`` of its body
    timeout_s: float = 10.0
    max_response_bytes: int = 64 << 10
    #: tries before the row is marked failed; the wait before try n is base * 2**(n-2), at most max, +-20%
    max_attempts: int = 10
    retry_base_s: float = 5.0
    retry_max_s: float = 3600.0
    #: how often the deliverer looks for due rows, and how many it sends at once
    poll_s: float = 0.5
    concurrency: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str], var_dir: Path) -> WebhookDeliverySettings:
        return cls(
            file=Path(env.get("FUSIONPLANE_WEBHOOKS_FILE", str(var_dir / "webhooks.json"))),
            allow_hosts=tuple(env.get("FUSIONPLANE_WEBHOOK_ALLOW_HOSTS", "").replace(",", " ").split()),
            timeout_s=_seconds(env, "FUSIONPLANE_WEBHOOK_TIMEOUT_S", 10.0, maximum=60),
            max_attempts=int(_seconds(env, "FUSIONPLANE_WEBHOOK_MAX_ATTEMPTS", 10, maximum=100)),
            retry_base_s=_seconds(env, "FUSIONPLANE_WEBHOOK_RETRY_BASE_S", 5.0),
            retry_max_s=_seconds(env, "FUSIONPLANE_WEBHOOK_RETRY_MAX_S", 3600.0),
            poll_s=_seconds(env, "FUSIONPLANE_WEBHOOK_POLL_S", 0.5, maximum=60),
        )


# -- the control plane -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Settings:
    var_dir: Path = Path("var")
    database_url: str = ""
    #: ``FUSIONPLANE_POLICY_FILE``; default: the policy shipped in the package (policies/default.json in a checkout)
    policy_file: Path = DEFAULT_POLICY_PATH
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
    #: how long a finished task's inputs staged into a target's store are kept (then retention removes them)
    staged_retention_seconds: float = DEFAULT_STAGED_RETENTION_S
    #: how long the presigned URL ``GET /v1/tasks/{id}/output`` redirects to (s3, az outputs) is valid
    output_link_seconds: int = DEFAULT_OUTPUT_LINK_S
    #: the most bytes one PATCH of a resumable (tus) upload may carry
    upload_chunk_max_bytes: int = DEFAULT_UPLOAD_CHUNK_MAX_BYTES
    #: an unfinished resumable upload expires this long after its last chunk
    upload_expiry_seconds: float = DEFAULT_UPLOAD_EXPIRY_S
    host: str = "127.0.0.1"
    port: int = 8080
    #: ``FUSIONPLANE_PUBLIC_URL``: the URL workers call back to (heartbeats, progress, the ending); default
    #: http://HOST:PORT. Workers of aws, azure and kubernetes targets must reach it (serve checks its host)
    public_url: str = ""
    #: serve with remote targets although the callback URL is loopback (a tunnel, tests): a warning, not a refusal
    allow_loopback_callbacks: bool = False
    #: no auth at all; refused unless bound to loopback
    insecure_dev: bool = False
    local_slots: int = 2
    #: argv prefix of the local provider's worker (shell words); empty: this interpreter's ``worker run``
    local_worker_command: tuple[str, ...] = ()
    #: variables passed to local workers as they are, beyond their minimal environment (providers/local_env.py)
    local_worker_env: tuple[str, ...] = ()
    #: ``FUSIONPLANE_LOCAL_WARM_WORKER``: hand local attempts to one long-lived warm worker (models loaded once)
    local_warm_worker: bool = False
    #: how long a scheduler's leadership lasts without renewal (several ``serve`` replicas on one database)
    leader_lease_seconds: float = 15.0
    #: how often the scheduler reconciles what each provider owns with the store
    reconcile_seconds: float = 60.0
    #: per-tenant s3 prefixes and web hosts (docs/security.md); None: public web hosts, no s3
    storage_file: Path | None = None
    #: ``FUSIONPLANE_SIM_REPORTS_DIR``: the simulator's HTML reports the console lists (None: none)
    sim_reports_dir: Path | None = None
    #: ``FUSIONPLANE_PVC_MOUNTS``: claim -> where this control plane mounts it (the stores of pvc targets)
    pvc_mounts: Mapping[str, Path] = field(default_factory=dict)
    #: internal hosts (``host`` or ``host:port``) http(s) inputs may come from despite the address rules
    fetch_allow_hosts: tuple[str, ...] = ()
    #: the largest input a worker downloads (checked while reading)
    fetch_max_bytes: int = 2 << 30
    fetch_connect_timeout_s: float = 10.0
    fetch_read_timeout_s: float = 60.0
    #: how long a submission waits to resolve an input's host name (no answer: accepted, the worker re-checks)
    submit_resolve_timeout_s: float = 2.0
    #: the cloud providers' image, owner tag and endpoints
    clouds: CloudSettings = field(default_factory=CloudSettings)
    #: the signal pollers' schedules and endpoints
    signals: SignalSettings = field(default_factory=SignalSettings)
    #: Consul as the policy source (unset: the policy file)
    consul: ConsulSettings = field(default_factory=ConsulSettings)
    #: the seed form's built-in clouds (``FUSIONPLANE_AWS_*`` / ``FUSIONPLANE_AZURE_*``)
    seed_clouds: SeedClouds = field(default_factory=SeedClouds)
    webhooks: WebhookDeliverySettings = field(default_factory=WebhookDeliverySettings)
    #: ``FUSIONPLANE_EVENTS_STREAM_S``: how long one ``GET /v1/events`` stays open (the client resumes after)
    events_stream_seconds: float = 300.0
    #: a comment line this often on a quiet stream, so proxies and clients know it lives
    events_heartbeat_seconds: float = 15.0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Every setting from this process's environment; ``overrides`` (the command line's) win.

        A bad value raises ValueError naming its variable.
        """
        env = os.environ
        var_dir = Path(env.get("FUSIONPLANE_VAR_DIR", "var"))
        values: dict[str, object] = {
            "var_dir": var_dir,
            "database_url": env.get("FUSIONPLANE_DATABASE_URL", ""),
            "policy_file": Path(env.get("FUSIONPLANE_POLICY_FILE") or DEFAULT_POLICY_PATH),
            "tokens_file": Path(env.get("FUSIONPLANE_TOKENS_FILE", str(var_dir / "tokens.json"))),
            "input_roots": _paths(env.get("FUSIONPLANE_INPUT_ROOTS", str(var_dir / "inputs"))),
            "output_root": Path(env.get("FUSIONPLANE_OUTPUT_ROOT", str(var_dir / "outputs"))).resolve(),
            "max_body_bytes": int(env.get("FUSIONPLANE_MAX_BODY_BYTES", str(1 << 20))),
            "max_upload_bytes": int(env.get("FUSIONPLANE_MAX_UPLOAD_BYTES", str(2 << 30))),
            "public_url": env.get("FUSIONPLANE_PUBLIC_URL", ""),
            "local_slots": int(env.get("FUSIONPLANE_LOCAL_SLOTS", "2")),
            "local_worker_command": tuple(shlex.split(env.get("FUSIONPLANE_LOCAL_WORKER_COMMAND", ""))),
            "local_worker_env": parse_pass_env(env.get(PASS_ENV_VARIABLE, "")),
            "local_warm_worker": _flag(env, "FUSIONPLANE_LOCAL_WARM_WORKER"),
            "leader_lease_seconds": _seconds(env, "FUSIONPLANE_LEADER_LEASE_S", 15.0),
            "reconcile_seconds": _seconds(env, "FUSIONPLANE_RECONCILE_S", 60.0),
            "upload_quota_bytes": _byte_count(env, "FUSIONPLANE_UPLOAD_QUOTA_BYTES", DEFAULT_UPLOAD_QUOTA_BYTES),
            "upload_retention_seconds": _seconds(
                env, "FUSIONPLANE_UPLOAD_RETENTION_S", DEFAULT_UPLOAD_RETENTION_S, maximum=MAX_UPLOAD_RETENTION_S
            ),
            "staged_retention_seconds": _seconds(
                env, "FUSIONPLANE_STAGED_RETENTION_S", DEFAULT_STAGED_RETENTION_S, maximum=MAX_UPLOAD_RETENTION_S
            ),
            # a SigV4 presigned URL lives at most 7 days
            "output_link_seconds": max(
                1, int(_seconds(env, "FUSIONPLANE_OUTPUT_LINK_S", DEFAULT_OUTPUT_LINK_S, maximum=604_800))
            ),
            "upload_chunk_max_bytes": _byte_count(
                env, "FUSIONPLANE_UPLOAD_CHUNK_MAX_BYTES", DEFAULT_UPLOAD_CHUNK_MAX_BYTES
            ),
            "upload_expiry_seconds": _seconds(
                env, "FUSIONPLANE_UPLOAD_EXPIRY_S", DEFAULT_UPLOAD_EXPIRY_S, maximum=MAX_UPLOAD_RETENTION_S
            ),
            "storage_file": _storage_file(env),
            "sim_reports_dir": Path(env["FUSIONPLANE_SIM_REPORTS_DIR"]).expanduser()
            if env.get("FUSIONPLANE_SIM_REPORTS_DIR")
            else None,
            "pvc_mounts": _pvc_mounts(env),
            "fetch_allow_hosts": tuple(env.get("FUSIONPLANE_FETCH_ALLOW_HOSTS", "").replace(",", " ").split()),
            "fetch_max_bytes": _byte_count(env, "FUSIONPLANE_FETCH_MAX_BYTES", 2 << 30),
            "fetch_connect_timeout_s": _seconds(env, "FUSIONPLANE_FETCH_CONNECT_TIMEOUT_S", 10.0),
            "fetch_read_timeout_s": _seconds(env, "FUSIONPLANE_FETCH_READ_TIMEOUT_S", 60.0),
            "clouds": CloudSettings.from_env(env),
            "signals": SignalSettings.from_env(env),
            "consul": ConsulSettings.from_env(env),
            "seed_clouds": seed_clouds_from_env(env),
            "webhooks": WebhookDeliverySettings.from_env(env, var_dir),
            "events_stream_seconds": _seconds(env, "FUSIONPLANE_EVENTS_STREAM_S", 300.0, maximum=3600),
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
        try:
            AllowedHosts.parse(self.webhooks.allow_hosts)
        except ValueError as exc:
            raise ValueError(f"FUSIONPLANE_WEBHOOK_ALLOW_HOSTS: {exc}") from None
