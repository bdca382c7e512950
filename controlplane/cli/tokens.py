"""``fusionctl tokens create|list|revoke``: API tokens; only their hashes are stored.

These edit the tokens file directly (on the control plane's machine or
volume); a running ``fusionctl serve`` notices the change within about a
second, so a revoked token stops working without a restart.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

import click

from controlplane.api.tokens_file import ROLES, TokenError, create_token, list_tokens, revoke_token
from controlplane.cli.common import output_option, print_json

__all__ = ["tokens"]

DEFAULT_TOKENS_FILE = Path("var/tokens.json")

#: TokenError.field -> the option that carries it
_OPTIONS = {"tenant": "--tenant", "role": "--role", "name": "--name", "name_or_id": "NAME_OR_ID"}

tokens_file_option = click.option(
    "--tokens-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_TOKENS_FILE,
    envvar="FUSIONPLANE_TOKENS_FILE",
    show_default=True,
)


def _refuse(exc: TokenError) -> NoReturn:
    """A usage error naming the option (or ``--tokens-file`` for a problem inside the file)."""
    option = _OPTIONS.get(exc.field)
    if option is None:  # tokens_file, tokens[3].tenant, ...
        raise click.BadParameter(str(exc), param_hint="--tokens-file") from exc
    message = str(exc).removeprefix(f"{exc.field}: ")
    raise click.BadParameter(message, param_hint=option) from exc


@click.group()
def tokens() -> None:
    """API tokens (bearer); the tokens file keeps sha256 hashes only."""


@tokens.command("create")
@click.option("--tenant", required=True, help="Tenant the token acts for: [a-z0-9][a-z0-9-]{0,62}.")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--name", default="", help="A unique label to list and revoke the token by (not secret).")
@tokens_file_option
def create(tenant: str, role: str, name: str, tokens_file: Path) -> None:
    """Print a new token once (stdout) and record its hash in the tokens file."""
    try:
        token = create_token(tokens_file, tenant=tenant, role=role, name=name)
    except TokenError as exc:
        _refuse(exc)
    except OSError as exc:
        raise click.ClickException(f"{tokens_file}: {exc.strerror or exc}") from exc
    click.echo(token)
    click.echo(f"recorded the hash for tenant {tenant!r}, role {role} in {tokens_file}", err=True)


@tokens.command("list")
@tokens_file_option
@output_option
def list_command(tokens_file: Path, output_format: str) -> None:
    """The tokens in the file: id (first 8 hex digits of the hash), name, tenant, role, creation time."""
    try:
        entries = list_tokens(tokens_file)
    except TokenError as exc:
        _refuse(exc)
    if output_format == "json":
        print_json({"tokens": [asdict(entry) for entry in entries]})
        return
    click.echo(f"{'ID':<9} {'NAME':<32} {'TENANT':<24} {'ROLE':<10} CREATED")
    for entry in entries:
        problem = f"  (refused by the server: {entry.problem})" if entry.problem else ""
        click.echo(
            f"{entry.id:<9} {entry.name:<32} {entry.tenant:<24} {entry.role:<10} {entry.created_at or '-'}{problem}"
        )


@tokens.command("revoke")
@click.argument("name_or_id")
@tokens_file_option
def revoke(name_or_id: str, tokens_file: Path) -> None:
    """Remove one token, by its name or its id (``tokens list``); a running server stops accepting it in seconds."""
    try:
        removed = revoke_token(tokens_file, name_or_id=name_or_id)
    except TokenError as exc:
        _refuse(exc)
    except OSError as exc:
        raise click.ClickException(f"{tokens_file}: {exc.strerror or exc}") from exc
    click.echo(f"revoked {removed.id} ({removed.name}, tenant {removed.tenant}, role {removed.role})", err=True)
