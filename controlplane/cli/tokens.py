"""``fusionctl tokens create``: mint an API token; only its hash is stored."""

from __future__ import annotations

from pathlib import Path

import click

from controlplane.api.auth import ROLES, TokenError, create_token

__all__ = ["tokens"]

DEFAULT_TOKENS_FILE = Path("var/tokens.json")


@click.group()
def tokens() -> None:
    """API tokens (bearer); the tokens file keeps sha256 hashes only."""


@tokens.command("create")
@click.option("--tenant", required=True, help="Tenant the token acts for.")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--name", default="", help="A label to recognise the token by (not secret).")
@click.option(
    "--tokens-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_TOKENS_FILE,
    envvar="FUSIONPLANE_TOKENS_FILE",
    show_default=True,
)
def create(tenant: str, role: str, name: str, tokens_file: Path) -> None:
    """Print a new token once (stdout) and record its hash in the tokens file."""
    try:
        token = create_token(tokens_file, tenant=tenant, role=role, name=name)
    except TokenError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(token)
    click.echo(f"recorded the hash for tenant {tenant!r}, role {role} in {tokens_file}", err=True)
