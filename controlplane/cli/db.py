"""``fusionctl db``: apply, revert and inspect the store's migrations."""

from __future__ import annotations

import click

from controlplane.store import (
    DATABASE_URL_ENV,
    current_revision,
    database_url,
    downgrade,
    head_revision,
    make_engine,
    normalize_url,
    upgrade,
)

__all__ = ["db"]

_url_option = click.option(
    "--database-url",
    "url",
    envvar=DATABASE_URL_ENV,
    default=None,
    metavar="URL",
    help=f"sqlite:///PATH or postgresql://...; default ${DATABASE_URL_ENV}, else SQLite at ./var/fusionplane.db.",
)


def _shown(url: str | None) -> str:
    return normalize_url(database_url(url)).render_as_string(hide_password=True)


@click.group()
def db() -> None:
    """The state store's schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Revision to upgrade to.")
@_url_option
def upgrade_cmd(revision: str, url: str | None) -> None:
    """Apply migrations up to REVISION (creates the SQLite file and ./var when needed)."""
    upgrade(revision, url=url)
    click.echo(f"{_shown(url)}: at {_current(url) or 'base'}", err=True)


@db.command("downgrade")
@click.option("--revision", required=True, help="Revision to go back to ('base' drops every table).")
@_url_option
def downgrade_cmd(revision: str, url: str | None) -> None:
    """Revert migrations down to REVISION."""
    downgrade(revision, url=url)
    click.echo(f"{_shown(url)}: at {_current(url) or 'base'}", err=True)


@db.command("current")
@_url_option
def current_cmd(url: str | None) -> None:
    """Print the database's revision and whether it is the newest (exit 1 if not)."""
    current = _current(url)
    head = head_revision()
    click.echo(f"{current or 'base'}{' (head)' if current == head else f' (head is {head})'}")
    if current != head:
        raise SystemExit(1)


def _current(url: str | None) -> str | None:
    engine = make_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()
