"""Alembic environment: runs against the connection handed in by ``issuer.migrate``."""

from __future__ import annotations

from alembic import context

from issuer.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through issuer.migrate.upgrade(engine)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
