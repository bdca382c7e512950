"""``fusionctl serve``: the control plane on one machine (API + scheduler + local provider)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import click

from controlplane.api.auth import TokenError, TokenRegistry, create_token
from controlplane.config import Settings, is_loopback
from controlplane.jsonlog import setup_json_logging

__all__ = ["serve"]

log = logging.getLogger("fusionplane.serve")


def _write_private(path: Path, text: str) -> None:
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


def _dev_token(settings: Settings) -> tuple[Path, bool]:
    """The development admin token's file ``var/dev-token`` (0600), minted on first start; (path, minted).

    The token itself never goes to the log or the terminal: a log is read by
    more people, and kept longer, than ``var/``.
    """
    path = settings.var_dir / "dev-token"
    if path.is_file():
        return path, False
    token = create_token(settings.tokens_file, tenant="dev", role="admin", name="")  # named dev-admin-<id>
    _write_private(path, token + "\n")
    return path, True


def _dev_token_works(path: Path, tokens: TokenRegistry) -> bool:
    try:
        return tokens.authenticate(path.read_text(encoding="utf-8").strip()) is not None
    except OSError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--database-url",
    envvar="FUSIONPLANE_DATABASE_URL",
    default=None,
    help="SQLAlchemy URL [env: FUSIONPLANE_DATABASE_URL; default: SQLite under var/]",
)
@click.option(
    "--policy-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Policy JSON, used when CONSUL_HTTP_ADDR is not set; reloaded on change "
    "[env: FUSIONPLANE_POLICY_FILE; default: policies/default.json]",
)
@click.option(
    "--tokens-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Hashed API tokens [env: FUSIONPLANE_TOKENS_FILE; default: var/tokens.json]",
)
@click.option("--insecure-dev", is_flag=True, help="No authentication at all; only on a loopback address.")
@click.option("--no-migrate", is_flag=True, help="Do not apply database migrations at start.")
@click.option("--local-slots", type=click.IntRange(1, 64), default=None, help="Concurrent local workers.")
def serve(
    host: str,
    port: int,
    database_url: str | None,
    policy_file: Path | None,
    tokens_file: Path | None,
    insecure_dev: bool,
    no_migrate: bool,
    local_slots: int | None,
) -> None:
    """Run the REST API and the scheduler; tasks run on this machine through the local provider."""
    from apscheduler.jobstores.base import JobLookupError
    from apscheduler.schedulers.background import BackgroundScheduler

    from controlplane.api.app import create_app
    from controlplane.api.serving import run_api
    from controlplane.api.uploads import prune_uploads
    from controlplane.domain.tenant_storage import TenantStorage
    from controlplane.metrics import Metrics
    from controlplane.policy import PolicyError
    from controlplane.policy.storage import StorageError, StorageFile
    from controlplane.scheduler import Scheduler
    from controlplane.scheduler.leader import Leadership
    from controlplane.scheduler.policy_runtime import start_policy_runtime
    from controlplane.scheduler.providers_runtime import cloud_providers
    from controlplane.scheduler.reconcile import Reconciler
    from controlplane.scheduler.seed_clouds import seed_clouds_from_env
    from controlplane.scheduler.signals_runtime import (
        build_signal_hub,
        check_signal_schedules,
        pollers_json,
        prune_history,
    )
    from controlplane.scheduler.workerspec import tenant_grants
    from controlplane.store import Store, make_engine, upgrade
    from controlplane.store.uploads import inputs_in_use
    from providers.local import LocalProvider

    overrides: dict[str, object] = {"host": host, "port": port, "insecure_dev": insecure_dev}
    if policy_file is not None:
        overrides["policy_file"] = policy_file
    if tokens_file is not None:
        overrides["tokens_file"] = tokens_file
    if local_slots is not None:
        overrides["local_slots"] = local_slots
    try:
        settings = Settings.from_env(**overrides)
        settings.check()
        check_signal_schedules()  # FUSIONPLANE_SIGNALS_*: before anything is migrated or started
        seed_clouds = seed_clouds_from_env()  # FUSIONPLANE_AWS_* / FUSIONPLANE_AZURE_*: the seed form's clouds
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    # before anything is created (settings only read): the database, var/, uploads and the
    # workers' outputs (the local workers inherit it) are readable by this user only
    os.umask(0o077)
    setup_json_logging()
    for folder in (settings.var_dir, settings.output_root, *settings.input_roots):
        folder.mkdir(parents=True, exist_ok=True)
    # a var/ made by an older version (or by hand) may be 0755: it holds the database and tokens
    settings.var_dir.chmod(settings.var_dir.stat().st_mode & 0o700)
    engine = make_engine(database_url or settings.database_url or None)
    if not no_migrate:
        upgrade(engine=engine)
    store = Store(engine)
    metrics = Metrics.create()
    scheduler_id = f"{socket.gethostname()}-{os.getpid()}"
    try:
        policies = start_policy_runtime(
            store=store,
            policy_file=settings.policy_file,
            applied_by=scheduler_id,
            metrics=metrics,
            seed_clouds=seed_clouds,
        )
    except (PolicyError, OSError) as exc:
        raise click.ClickException(f"policy: {exc}") from exc
    try:
        storage = StorageFile(settings.storage_file)
    except (StorageError, OSError) as exc:
        raise click.ClickException(f"storage allow-lists: {exc}") from exc
    dev_token = None if insecure_dev else _dev_token(settings)
    try:
        tokens = TokenRegistry.load(settings.tokens_file, metrics=metrics)
    except TokenError as exc:
        raise click.ClickException(f"tokens file {settings.tokens_file}: {exc}") from exc
    local = LocalProvider(
        state_dir=settings.var_dir / "local-provider",
        slots=settings.local_slots,
        worker_command=list(settings.local_worker_command) or None,
        pass_env=settings.local_worker_env,
    )

    def attempt_logs(attempt_id: str) -> Path | None:
        try:
            return local.logs(attempt_id)
        except FileNotFoundError:
            return None

    try:
        hub = build_signal_hub(store=store, policy=policies.current, metrics=metrics)
    except ValueError as exc:  # a bad FUSIONPLANE_SIGNALS_* setting
        raise click.UsageError(str(exc)) from exc
    checkpoint_root = (settings.var_dir / "checkpoints").resolve()
    scheduler = Scheduler(
        store=store,
        signals=hub.samples,
        policy=policies.current,
        providers={"local": local, **cloud_providers(lambda: policies.current().targets)},
        callback_base=settings.callback_base,
        checkpoint_root=checkpoint_root,
        scheduler_id=scheduler_id,
        metrics=metrics,
        storage=TenantStorage(
            input_roots=settings.input_roots, output_root=settings.output_root, checkpoint_root=checkpoint_root
        ),
        grants=tenant_grants(storage, settings),
    )
    jobs = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 5})
    reconciler = Reconciler(scheduler)
    elected = threading.Event()

    def on_elected(fenced: Store) -> None:
        # from now on every scheduler write checks this replica's token; reconcile at once
        scheduler.store = fenced
        scheduler.start_leading()  # what ended while nobody led is reconciliation's
        elected.set()
        with contextlib.suppress(JobLookupError):
            jobs.modify_job("reconcile", next_run_time=datetime.now(UTC))

    def reconcile() -> None:
        just_elected = elected.is_set()
        elected.clear()
        reconciler.run(elected=just_elected)

    leadership = Leadership(
        store=store,
        holder=scheduler_id,
        lease_seconds=settings.leader_lease_seconds,
        on_elected=on_elected,
        metrics=metrics,
    )
    guard = leadership.guard
    jobs.add_job(
        guard(scheduler.place_until_idle, default=0),
        "interval",
        seconds=0.5,
        kwargs={"max_seconds": 0.4},
        id="place",
    )
    jobs.add_job(guard(scheduler.follow, default=0), "interval", seconds=1.0, id="follow")
    jobs.add_job(guard(scheduler.release_finished, default=0), "interval", seconds=5.0, id="release")
    jobs.add_job(guard(reconcile, default=None), "interval", seconds=settings.reconcile_seconds, id="reconcile")
    jobs.add_job(leadership.renew, "interval", seconds=leadership.renew_every_seconds, id="leader-lease")
    hub.schedule(jobs)
    jobs.add_job(prune_history, "interval", hours=1, args=(store,), id="signals-retention")
    if settings.input_roots:
        jobs.add_job(
            prune_uploads,
            "interval",
            seconds=min(3600.0, settings.upload_retention_seconds),
            kwargs={
                "root": settings.input_roots[0],
                "retention_seconds": settings.upload_retention_seconds,
                "in_use": lambda: inputs_in_use(store),
            },
            id="uploads-retention",
        )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    asgi, _app = create_app(
        settings=settings,
        store=store,
        tokens=tokens,
        metrics=metrics,
        attempt_logs=attempt_logs,
        active_policy=policies.active,
        live_signals=lambda: scheduler.snapshot(policies.current()),
        signal_pollers=lambda: pollers_json(hub),
        leader_status=leadership.status,
        storage=storage,
    )
    url = f"http://{host}:{port}"
    click.echo(
        f"FusionPlane control plane on {url} (policy {policies.current().version[:12]} from "
        f"{policies.current().source}, database {engine.url.render_as_string()})",
        err=True,
    )
    if dev_token is not None:
        path, minted = dev_token
        log.info("", extra={"event": "serve.dev_token", "path": str(path), "minted": minted})
        click.echo(
            f"development token (admin, tenant dev) {'written to' if minted else 'in'} {path} (mode 0600)", err=True
        )
        if not _dev_token_works(path, tokens):
            click.echo(f"  it is not in {settings.tokens_file} (revoked?): delete {path} to mint a new one", err=True)
        click.echo(f"  export FUSIONPLANE_URL={url} FUSIONPLANE_TOKEN=$(cat {path})", err=True)
    elif not is_loopback(host):  # pragma: no cover - check() refuses this
        raise click.UsageError("insecure mode off loopback")
    jobs.start()
    leadership.renew()  # a lone replica leads at once; otherwise it waits for the holder's lease
    try:
        run_api(asgi, host=host, port=port)
    finally:
        jobs.shutdown(wait=True)
        leadership.resign()
        policies.stop()
        hub.close()
