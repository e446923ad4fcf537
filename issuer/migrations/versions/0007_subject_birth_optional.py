"""Organisations have no birth date: ``subjects.birth_date`` becomes nullable and the
placeholder 0001-01-01 that organisations were stored with becomes NULL.

Revision ID: 0007_subject_birth_optional
Revises: 0006_rights
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0007_subject_birth_optional"
down_revision = "0006_rights"
branch_labels = None
depends_on = None

_PLACEHOLDER = dt.date(1, 1, 1)
"""What organisations were stored with while the column could not be null (no person is
born in year 1: GB 11643 numbers start in the 19th century)."""
_subjects = sa.table("subjects", sa.column("birth_date", sa.Date))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _replace_on_sqlite("DATE", keep_placeholder=False)
        return
    op.alter_column("subjects", "birth_date", existing_type=sa.Date(), nullable=True)
    op.execute(
        _subjects.update().where(_subjects.c.birth_date == _PLACEHOLDER).values(birth_date=None)
    )


def downgrade() -> None:
    op.execute(
        _subjects.update().where(_subjects.c.birth_date.is_(None)).values(birth_date=_PLACEHOLDER)
    )
    if op.get_bind().dialect.name == "sqlite":
        _replace_on_sqlite("DATE NOT NULL DEFAULT '0001-01-01'", keep_placeholder=True)
        return
    op.alter_column("subjects", "birth_date", existing_type=sa.Date(), nullable=False)


def _replace_on_sqlite(column_type: str, *, keep_placeholder: bool) -> None:
    """SQLite cannot change a column's nullability in place, and rebuilding ``subjects``
    (Alembic's batch mode) would drop a table that records, cards and rights rows reference
    (a foreign key failure under ``PRAGMA foreign_keys=ON``, which cannot be switched off
    inside the migration's transaction). So: a new column, the values copied, the old column
    dropped and the new one renamed (SQLite >= 3.35)."""
    op.execute(f"ALTER TABLE subjects ADD COLUMN birth_date_new {column_type}")
    copy = sa.table("subjects", sa.column("birth_date", sa.Date), sa.column("birth_date_new"))
    update = copy.update().values(birth_date_new=copy.c.birth_date)
    if not keep_placeholder:
        update = update.where(copy.c.birth_date != _PLACEHOLDER)
    op.execute(update)
    op.execute("ALTER TABLE subjects DROP COLUMN birth_date")
    op.execute("ALTER TABLE subjects RENAME COLUMN birth_date_new TO birth_date")
