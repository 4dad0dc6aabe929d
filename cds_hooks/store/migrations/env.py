"""Alembic environment, driven only programmatically by ``cds_hooks.store.migrate``.

The caller passes an open connection (already inside the transaction that holds the
migration lock) in ``config.attributes["connection"]``; there is no alembic.ini.
"""

from __future__ import annotations

from alembic import context

from cds_hooks.store.schema import metadata

if context.is_offline_mode():
    raise RuntimeError("Offline (SQL script) migrations are not supported; run them online.")

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=context.config.get_main_option("version_table") or "alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
