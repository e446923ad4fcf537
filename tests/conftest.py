"""Shared fixtures: databases (SQLite and PostgreSQL) and the issuer context on them.

Under ``CI=true`` a missing PostgreSQL or PC/SC stack fails the test instead of skipping.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from issuer.settings import IssuerSettings
from issuer.wiring import IssuerContext, build_issuer
from tests.pcsc_harness import skip_or_fail

PG_ADMIN_DSN = os.environ.get("STARCARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
NOW = dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'starcard.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except Exception as exc:  # any failure to reach the server
        skip_or_fail(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}")
        raise
    name = "starcard_test_" + secrets.token_hex(6)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


def trust_clock() -> float:
    """Dates the embedded trust list before both NOW and the wall clock, so that tests at the
    fixed NOW and tests that must use the wall clock (the terminal CLI) both accept it."""
    return min(time.time(), NOW.timestamp()) - 3600


def make_settings(database_url: str, tmp_path: Path) -> IssuerSettings:
    return IssuerSettings(
        trust_list_valid_s=10 * 365 * 86_400,
        database_url=database_url,
        hsm_path=tmp_path / "hsm.json",
        hsm_passphrase=secrets.token_bytes(16),
        pii_key=secrets.token_bytes(32),
        # this HSM also plays the card factory: it hands out diversified card keys
        card_factory_export=True,
    )


@pytest.fixture
def issuer_ctx(database_url: str, tmp_path: Path) -> Iterator[IssuerContext]:
    ctx = build_issuer(make_settings(database_url, tmp_path), clock=trust_clock)
    yield ctx
    ctx.engine.dispose()


@pytest.fixture
def sqlite_issuer(sqlite_url: str, tmp_path: Path) -> Iterator[IssuerContext]:
    ctx = build_issuer(make_settings(sqlite_url, tmp_path), clock=trust_clock)
    yield ctx
    ctx.engine.dispose()
