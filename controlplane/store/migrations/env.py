"""Alembic environment for the store; configured by controlplane.store.migrate.alembic_config()."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from controlplane.store.engine import make_engine
from controlplane.store.tables import metadata

config = context.config
target_metadata = metadata


def _run(engine: Engine) -> None:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            # SQLite cannot ALTER most things: let autogenerate emit batch operations
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if isinstance(engine, Engine):
        _run(engine)
        return
    owned = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        _run(owned)
    finally:
        owned.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
