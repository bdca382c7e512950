"""``fusionctl serve``: the control plane on one machine (API + scheduler + local provider)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import click

from controlplane.config import Settings, is_loopback
from controlplane.jsonlog import setup_json_logging

if TYPE_CHECKING:
    from controlplane.runtime import Runtime

__all__ = ["serve"]

log = logging.getLogger("fusionplane.serve")


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
    "[env: FUSIONPLANE_POLICY_FILE; default: the shipped policies/default.json]",
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
@click.option(
    "--allow-loopback-callbacks",
    is_flag=True,
    help="Start although the policy has aws, azure or kubernetes targets and the callback URL "
    "(FUSIONPLANE_PUBLIC_URL, default http://HOST:PORT) is loopback; a loud warning instead of a refusal.",
)
def serve(
    host: str,
    port: int,
    database_url: str | None,
    policy_file: Path | None,
    tokens_file: Path | None,
    insecure_dev: bool,
    no_migrate: bool,
    local_slots: int | None,
    allow_loopback_callbacks: bool,
) -> None:
    """Run the REST API and the scheduler; tasks run on this machine through the local provider."""
    from controlplane.api.serving import ListenError, listen
    from controlplane.runtime import check_settings

    given: dict[str, object] = {"policy_file": policy_file, "tokens_file": tokens_file, "local_slots": local_slots}
    if allow_loopback_callbacks:
        given["allow_loopback_callbacks"] = True
    overrides = {name: value for name, value in given.items() if value is not None}
    if database_url:
        overrides["database_url"] = database_url
    try:
        settings = Settings.from_env(host=host, port=port, insecure_dev=insecure_dev, **overrides)
        check_settings(settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    # the port first: a busy one fails here, before the database is migrated or the scheduler's lease taken
    try:
        listener = listen(host, port)
    except ListenError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        _run(settings, listener, migrate=not no_migrate)
    finally:
        listener.close()


def _run(settings: Settings, listener: socket.socket, *, migrate: bool) -> None:
    """Build the runtime (migrations, the policy, the lease), then serve the API on ``listener`` until stopped."""
    from controlplane.api.serving import run_api
    from controlplane.runtime import StartupError, build_runtime, prepare_folders
    from controlplane.runtime.callbacks import callback_refusal

    # before anything is created (settings only read): the database, var/, uploads and the
    # workers' outputs (the local workers inherit it) are readable by this user only
    os.umask(0o077)
    setup_json_logging()
    prepare_folders(settings)
    try:
        runtime = build_runtime(settings, migrate=migrate)
    except StartupError as exc:
        raise (click.UsageError if exc.usage else click.ClickException)(str(exc)) from exc
    _announce(runtime.settings, runtime)
    if settings.allow_loopback_callbacks and callback_refusal(
        settings.callback_base, runtime.policies.current().targets
    ):
        click.echo(
            f"WARNING: remote workers call back to {settings.callback_base}, a loopback address "
            "(--allow-loopback-callbacks); they must reach it some other way",
            err=True,
        )
    runtime.start()
    try:
        run_api(runtime.asgi, host=settings.host, port=settings.port, listener=listener)
    finally:
        runtime.stop()


def _announce(settings: Settings, runtime: Runtime) -> None:
    """Say where the control plane listens, with what, and where the development token is."""
    url = f"http://{settings.host}:{settings.port}"
    policy = runtime.policies.current()
    click.echo(
        f"FusionPlane control plane on {url} (policy {policy.version[:12]} from "
        f"{policy.source}, database {runtime.engine.url.render_as_string()})",
        err=True,
    )
    dev_token = runtime.dev_token
    if dev_token is not None:
        path = dev_token.path
        log.info("", extra={"event": "serve.dev_token", "path": str(path), "minted": dev_token.minted})
        click.echo(
            f"development token (admin, tenant dev) {'written to' if dev_token.minted else 'in'} {path} (mode 0600)",
            err=True,
        )
        if not dev_token.works(runtime.tokens):
            click.echo(f"  it is not in {settings.tokens_file} (revoked?): delete {path} to mint a new one", err=True)
        click.echo(f"  export FUSIONPLANE_URL={url} FUSIONPLANE_TOKEN=$(cat {path})", err=True)
    elif settings.insecure_dev and not is_loopback(settings.host):  # pragma: no cover - check() refuses this
        raise click.UsageError("insecure mode off loopback")
    elif not settings.insecure_dev:
        # off loopback no development token is minted: say how to get one rather than leave the operator guessing
        click.echo("no development token off loopback: create tokens with `fusionctl tokens create`", err=True)
