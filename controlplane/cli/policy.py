"""``fusionctl policy``: validate, show, diff, push, history, rollback, simulate.

The policy lives in Consul when ``CONSUL_HTTP_ADDR`` is set (key
``FUSIONPLANE_POLICY_KEY``, default ``fusionplane/policy``), otherwise in the
policy file. ``show`` and ``diff`` remember the version you saw; ``push``
writes only if the policy is still that version (Consul check-and-set on its
ModifyIndex; for a file, its sha256), so two operators never overwrite each
other unknowingly. ``history`` and ``rollback`` ask the control plane's API,
which records every version that took effect. ``simulate`` reads the
control plane's database directly (read only): a day of decisions is too
much to page through the API.

Exit codes: 0 done (``diff``: no difference), 1 ``diff`` found differences or
``push`` was refused because the policy changed, 3 source or API unreachable,
65 invalid policy or input.
"""

from __future__ import annotations

import difflib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click

from controlplane.cli.client import ApiClient, client_options
from controlplane.cli.common import output_option, parse_duration, print_json
from controlplane.config import ClientSettings, ConsulSettings, seed_clouds_from_env
from controlplane.domain import TENANT_RULE, SignalSnapshot, is_tenant_name
from controlplane.policy import PolicyError, parse_policy, policy_version
from controlplane.policy.checks import Finding, validate_document
from controlplane.policy.overlay import apply_overlay
from controlplane.policy.seed import SeedClouds
from controlplane.policy.simulate import DEFAULT_ASSUMED_RUNTIME_S, Placement, ReplayItem, with_capacity
from controlplane.policy.simulate import simulate as run_simulation
from controlplane.policy_sources.consul_source import ConsulPolicySource, consul_client
from controlplane.policy_sources.sources import MAX_POLICY_BYTES, FilePolicySource
from providers.target_settings import check_target_settings

__all__ = ["policy"]

EXIT_DIFFERENT = 1
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
EXIT_INVALID = 65
_CONSUL_TIMEOUT_S = 10.0


def _die(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _seed_clouds() -> SeedClouds:
    """The seed form's built-in clouds as ``serve`` configures them (FUSIONPLANE_AWS_*, FUSIONPLANE_AZURE_*)."""
    try:
        return seed_clouds_from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


# -- reading files ------------------------------------------------------------------------------


def _read_document(path: Path) -> tuple[bytes, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        _die(f"cannot read {path}: {exc.strerror}", EXIT_INVALID)
    if len(raw) > MAX_POLICY_BYTES:
        _die(f"{path}: larger than {MAX_POLICY_BYTES} bytes", EXIT_INVALID)
    try:
        return raw, json.loads(raw)
    except ValueError as exc:
        _die(f"{path}: not valid JSON: {exc}", EXIT_INVALID)


def _pretty(document: Any) -> list[str]:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").splitlines(keepends=True)


# -- where the policy lives -----------------------------------------------------------------------


@dataclass
class _Current:
    """What the source holds now: ``seen`` is the token for check-and-set (ModifyIndex or sha256)."""

    name: str
    raw: bytes | None
    seen: int | str | None


class _Source:
    def __init__(self, tenant: str | None) -> None:
        if tenant is not None and not is_tenant_name(tenant):
            _die(f"--tenant: {tenant!r} is not a tenant name ({TENANT_RULE})", EXIT_INVALID)
        self.tenant = tenant
        consul = ConsulSettings.from_env()
        #: named in "cannot reach Consul at ..."
        self.consul_address = consul.address
        if consul.configured:
            self.consul: ConsulPolicySource | None = ConsulPolicySource(
                consul_client(token=consul.token, timeout_s=_CONSUL_TIMEOUT_S), consul.policy_key
            )
            self.files: FilePolicySource | None = None
            where = f"consul://{consul.address}/{self.consul.key}"
        else:
            from controlplane.config import Settings

            self.consul, self.files = None, FilePolicySource(Settings.from_env().policy_file)
            where = f"file://{self.files.path.resolve()}"
        self.where = where + (f"/tenants/{tenant}" if tenant else "")

    def current(self) -> _Current:
        if self.consul is not None:
            try:
                read = self.consul.read()
            except Exception as exc:  # requests / consul errors
                _die(f"cannot reach Consul at {self.consul_address}: {exc}", EXIT_UNREACHABLE)
            if self.tenant is None:
                return _Current(self.where, read.raw, read.modify_index or 0)
            key = f"{self.consul.key}/tenants/{self.tenant}"
            try:
                _index, item = self.consul.client.kv.get(key)
            except Exception as exc:
                _die(f"cannot reach Consul: {exc}", EXIT_UNREACHABLE)
            return _Current(self.where, item["Value"] if item else None, int(item["ModifyIndex"]) if item else 0)
        assert self.files is not None
        path = self.files.path if self.tenant is None else self.files.tenants_dir / f"{self.tenant}.json"
        raw = path.read_bytes() if path.is_file() else None
        return _Current(self.where, raw, FilePolicySource(path).current_version())

    def base_document(self) -> Any:
        """The base policy now in the source (overlays are checked against it)."""
        saved, self.tenant = self.tenant, None
        try:
            current = self.current()
        finally:
            self.tenant = saved
        if current.raw is None:
            _die(f"there is no base policy at {self.where}; push one before a tenant overlay", EXIT_INVALID)
        return json.loads(current.raw)

    def write(self, raw: bytes, expected: int | str | None) -> bool:
        if self.consul is not None:
            cas = int(expected or 0)
            try:
                if self.tenant is None:
                    return self.consul.write(raw, cas=cas)
                return self.consul.write_overlay(self.tenant, raw, cas=cas)
            except Exception as exc:
                _die(f"cannot reach Consul: {exc}", EXIT_UNREACHABLE)
        assert self.files is not None
        path = self.files.path if self.tenant is None else self.files.tenants_dir / f"{self.tenant}.json"
        return FilePolicySource(path).write(raw, expected_version=expected if isinstance(expected, str) else None)


# -- "the version you last saw" ---------------------------------------------------------------------


def _seen_file() -> Path:
    return ClientSettings.from_env().state_home / "fusionplane" / "policy-seen.json"


def _load_seen() -> dict[str, Any]:
    try:
        value = json.loads(_seen_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _remember(where: str, seen: int | str | None) -> None:
    state = _load_seen()
    state[where] = seen
    path = _seen_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def _show_token(seen: int | str | None) -> str:
    if isinstance(seen, int):
        return f"ModifyIndex {seen}" if seen else "absent"
    return f"sha256 {seen[:12]}" if seen else "absent"


# -- validation -------------------------------------------------------------------------------------


def _findings(document: Any, tenant: str | None, source: _Source | None) -> list[Finding]:
    if tenant is None:
        return validate_document(document, seed_clouds=_seed_clouds(), check_settings=check_target_settings)
    assert source is not None
    try:
        _merged, effective = apply_overlay(source.base_document(), document, tenant, seed_clouds=_seed_clouds())
    except PolicyError as exc:
        return [Finding(path=exc.path, message=exc.message, severity="error")]
    from controlplane.policy.checks import check_policy

    return check_policy(effective)


def _report(path: Path, findings: list[Finding]) -> bool:
    """Print findings; True when there is no error."""
    errors = [f for f in findings if f.severity == "error"]
    for finding in findings:
        click.echo(f"{path}: {finding.severity}: {finding}", err=True)
    return not errors


# -- commands -----------------------------------------------------------------------------------------


@click.group()
def policy() -> None:
    """Validate, inspect and change the placement policy (Consul KV or the policy file)."""


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@output_option
def validate(file: Path, output_format: str) -> None:
    """Check FILE: schema and meaning (unknown targets, unreachable rules, duplicates). Exit 65 on any error."""
    _raw, document = _read_document(file)
    findings = validate_document(document, seed_clouds=_seed_clouds(), check_settings=check_target_settings)
    ok = not any(f.severity == "error" for f in findings)
    if output_format == "json":
        print_json(
            {
                "file": str(file),
                "valid": ok,
                "version": policy_version(document) if ok and isinstance(document, dict) else None,
                "findings": [{"path": f.path, "severity": f.severity, "message": f.message} for f in findings],
            }
        )
    else:
        _report(file, findings)
        if ok:
            click.echo(f"{file}: valid (version {policy_version(document)[:12]})")
    if not ok:
        sys.exit(EXIT_INVALID)


@policy.command()
@click.option("--tenant", default=None, help="Show this tenant's overlay instead of the base policy.")
@output_option
def show(tenant: str | None, output_format: str) -> None:
    """Print the policy in the source and remember its version for the next push."""
    source = _Source(tenant)
    current = source.current()
    if current.raw is None:
        _remember(source.where, current.seen)
        _die(f"nothing at {source.where}", EXIT_INVALID if tenant else EXIT_UNREACHABLE)
    document = json.loads(current.raw)
    _remember(source.where, current.seen)
    if output_format == "json":
        print_json(
            {
                "source": source.where,
                "seen": current.seen,
                "version": policy_version(document) if isinstance(document, dict) else None,
                "document": document,
            }
        )
        return
    click.echo(f"# {source.where} ({_show_token(current.seen)}, version {policy_version(document)[:12]})", err=True)
    click.echo("".join(_pretty(document)), nl=False)


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tenant", default=None, help="Compare with this tenant's overlay.")
def diff(file: Path, tenant: str | None) -> None:
    """Show what pushing FILE would change (exit 1 when it differs) and remember the version compared."""
    _raw, wanted = _read_document(file)
    source = _Source(tenant)
    current = source.current()
    _remember(source.where, current.seen)
    before = _pretty(json.loads(current.raw)) if current.raw is not None else []
    lines = list(
        difflib.unified_diff(
            before, _pretty(wanted), fromfile=f"{source.where} ({_show_token(current.seen)})", tofile=str(file)
        )
    )
    if not lines:
        click.echo(f"no change: {file} is what {source.where} holds")
        return
    click.echo("".join(lines), nl=False)
    sys.exit(EXIT_DIFFERENT)


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tenant", default=None, help="Push FILE as this tenant's overlay.")
@click.option(
    "--expect",
    "expected",
    default=None,
    help="Write only if the source is still this version (ModifyIndex, or sha256 for a file); "
    "default: the one `policy show` or `policy diff` last showed you.",
)
def push(file: Path, tenant: str | None, expected: str | None) -> None:
    """Validate FILE and write it, refusing if someone changed the policy since you last saw it."""
    raw, document = _read_document(file)
    source = _Source(tenant)
    if not _report(file, _findings(document, tenant, source)):
        _die(f"{file} is not valid; nothing was pushed", EXIT_INVALID)
    current = source.current()
    token = _expected(source, current, expected)
    if not source.write(raw, token):
        now = source.current()
        _die(
            f"refused: {source.where} changed since you last saw it "
            f"(you saw {_show_token(token)}, it is now {_show_token(now.seen)}); "
            f"run `fusionctl policy diff {file}` and push again",
            EXIT_REFUSED,
        )
    after = source.current()
    _remember(source.where, after.seen)
    click.echo(f"pushed {file} to {source.where}: version {policy_version(document)[:12]} ({_show_token(after.seen)})")


def _expected(source: _Source, current: _Current, given: str | None) -> int | str | None:
    if given is not None:
        if source.consul is not None:
            if not given.isdigit():
                _die("--expect: a Consul ModifyIndex is a whole number", EXIT_INVALID)
            return int(given)
        return given
    seen = _load_seen()
    if source.where in seen:
        value = seen[source.where]
        return value if isinstance(value, int | str) or value is None else None
    if current.raw is None:
        return current.seen  # nothing to overwrite: create-only
    _die(
        f"you have not seen the policy at {source.where}: run `fusionctl policy diff FILE` "
        "(or `policy show`) first, or pass --expect",
        EXIT_REFUSED,
    )


@policy.command()
@client_options
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@output_option
def history(url: str, token: str | None, limit: int, output_format: str) -> None:
    """Every policy version that took effect, newest first (from the control plane's records)."""
    client = ApiClient(url, token)
    try:
        items = client.get("/v1/policy/history", limit=limit)["items"]
    finally:
        client.close()
    if output_format == "json":
        print_json(items)
        return
    click.echo(f"{'APPLIED AT':<27} {'VERSION':<12} {'INDEX':>7}  {'SOURCE':<32} {'BY':<24} TENANTS")
    for item in items:
        index = "-" if item["modify_index"] is None else str(item["modify_index"])
        tenants = ",".join(sorted(item["tenants"])) or "-"
        click.echo(
            f"{item['applied_at'][:26]:<27} {item['version'][:12]:<12} {index:>7}  "
            f"{item['source'][:32]:<32} {item['applied_by'][:24]:<24} {tenants}"
        )


@policy.command()
@click.argument("version")
@client_options
def rollback(version: str, url: str, token: str | None) -> None:
    """Make VERSION (from `policy history`; 8+ leading characters do) the policy again.

    The document comes from the control plane's records; it is written with
    check-and-set against the version read just before, so a concurrent
    change makes the rollback fail instead of being overwritten.
    """
    client = ApiClient(url, token)
    try:
        found = client.get(f"/v1/policy/versions/{version}")
    finally:
        client.close()
    if str(found.get("source", "")).endswith("(overlay)"):
        _die(f"{version} is a tenant's merged policy, not a base policy; roll back the overlay instead", EXIT_INVALID)
    document = found["document"]
    findings = validate_document(document, seed_clouds=_seed_clouds(), check_settings=check_target_settings)
    if any(f.severity == "error" for f in findings):
        _die(f"stored version {found['version'][:12]} no longer validates: {findings[0]}", EXIT_INVALID)
    source = _Source(None)
    current = source.current()
    raw = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    if not source.write(raw, current.seen):
        _die(f"refused: {source.where} changed while rolling back; run the rollback again", EXIT_REFUSED)
    after = source.current()
    _remember(source.where, after.seen)
    click.echo(f"rolled back {source.where} to version {found['version'][:12]} ({_show_token(after.seen)})")


def _since(text: str | None) -> timedelta | None:
    if text is None:
        return None
    try:
        return timedelta(seconds=parse_duration(text, option="--since"))
    except click.BadParameter as exc:
        _die(f"--since: {exc.message}", EXIT_INVALID)


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--since", "since_text", default=None, help="Replay decisions from this long ago: 30m, 24h, 7d.")
@click.option("--last", type=click.IntRange(1, 10_000_000), default=None, help="Replay the newest N decisions.")
@click.option(
    "--database-url",
    envvar="FUSIONPLANE_DATABASE_URL",
    default=None,
    help="The control plane's database (read only) [env: FUSIONPLANE_DATABASE_URL; default: SQLite under var/]",
)
@click.option(
    "--assume-runtime",
    type=click.FloatRange(1, 86400 * 7),
    default=DEFAULT_ASSUMED_RUNTIME_S,
    show_default=True,
    help="Seconds of runtime for tasks that never finished and have no deadline (cost estimate).",
)
@click.option("--top", type=click.IntRange(1, 1000), default=20, show_default=True, help="Moves listed (text output).")
@output_option
def simulate(
    file: Path,
    since_text: str | None,
    last: int | None,
    database_url: str | None,
    assume_runtime: float,
    top: int,
    output_format: str,
) -> None:
    """Replay recorded decisions under the policy in FILE: what would have gone elsewhere, and the cost.

    Each task's first decision is planned again at its original time with the
    signals its batch recorded. Nothing is written.
    """
    if since_text is not None and last is not None:
        _die("--since and --last are alternatives: give one", EXIT_INVALID)
    _raw, document = _read_document(file)
    try:
        candidate = parse_policy(document, seed_clouds=_seed_clouds())
    except PolicyError as exc:
        _die(f"{file}: {exc}", EXIT_INVALID)
    window = _since(since_text)
    from controlplane.signals.snapshot_json import SnapshotError, snapshot_from_json
    from controlplane.store import Store, make_engine

    engine = make_engine(database_url)
    store = Store(engine)
    since = datetime.now(UTC) - window if window is not None else None
    started = time.perf_counter()
    skipped = 0

    def items() -> Iterator[ReplayItem]:
        nonlocal skipped
        cached_id: str | None = None
        cached: SignalSnapshot | None = None
        for recorded in store.recorded_decisions(since=since, last=last):
            if recorded.snapshot is None:
                skipped += 1
                continue
            if recorded.snapshot_id != cached_id:
                try:
                    cached = snapshot_from_json(recorded.snapshot)
                except SnapshotError:
                    skipped += 1
                    continue
                cached_id = recorded.snapshot_id
            assert cached is not None
            yield ReplayItem(
                task=recorded.task,
                decided_at=recorded.decided_at,
                snapshot=with_capacity(cached, recorded.capacity_seen),
                before=Placement(
                    target=recorded.target,
                    provider=recorded.provider,
                    expected_usd_h=recorded.expected_usd_h,
                    max_price_usd_h=recorded.max_price_usd_h,
                ),
                runtime_seconds=recorded.runtime_seconds,
            )

    try:
        report = run_simulation(items(), candidate, assumed_runtime_s=assume_runtime)
    finally:
        engine.dispose()
    report.skipped = skipped
    seconds = time.perf_counter() - started
    if output_format == "json":
        print_json({**report.to_json(), "seconds": round(seconds, 3)})
        return
    click.echo(
        f"replayed {report.replayed} decisions under {file} (version {candidate.version[:12]}) in {seconds:.1f} s"
    )
    if report.first_decided_at and report.last_decided_at:
        click.echo(f"  decided between {report.first_decided_at.isoformat()} and {report.last_decided_at.isoformat()}")
    if skipped:
        click.echo(f"  skipped {skipped} decision(s) recorded without a signal snapshot")
    share = 100.0 * report.changed / report.replayed if report.replayed else 0.0
    click.echo(f"placements that change: {report.changed} ({share:.1f}%)")
    for entry in report.to_json()["moves"][:top]:
        click.echo(f"  {entry['from']:>16} -> {entry['to']:<16} {entry['count']}")
    click.echo(
        f"estimated cost of the changed placements: {report.before_usd:.2f} -> {report.after_usd:.2f} USD "
        f"({report.delta_usd:+.2f})"
    )
    if report.unpriced or report.assumed_runtimes:
        click.echo(
            f"  {report.unpriced} placement(s) without a known price left out; "
            f"{report.assumed_runtimes} runtime(s) taken from the deadline or --assume-runtime"
        )
