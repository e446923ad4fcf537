"""Database migrations: ``upgrade(engine)`` brings any supported database to the head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

_HERE = Path(__file__).resolve().parent


def upgrade(engine: Engine) -> None:
    """Applies every pending Alembic migration in one transaction per migration run.

    ``heads``: features developed side by side may each add a migration branching from the
    same parent; all branches are applied (a merge revision joins them when they settle).
    """
    config = Config(str(_HERE / "alembic.ini"))
    config.set_main_option("script_location", str(_HERE / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "heads")
