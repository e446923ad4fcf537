"""The verifier store's receipt retention: purging refuses cut-offs younger than the retention
(default 5 years, as the issuer's query log); on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from tests.api.test_verifier_api import verifier_db
from verifier.store import (
    RECEIPT_RETENTION_YEARS,
    Receipt,
    RetentionError,
    Terminal,
    VerifierStore,
)

__all__ = ["verifier_db"]  # the fixture, shared

NOW = int(dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC).timestamp())
FIVE_YEARS_AGO = int(dt.datetime(2021, 11, 28, 9, 30, tzinfo=dt.UTC).timestamp())


def store_with_receipts(url: str, *ats: int, retention_years: int = 5) -> VerifierStore:
    store = VerifierStore.connect(url, retention_years=retention_years)
    store.register_terminal(Terminal("lib-1", "区图书馆", "library", "pem", "ops", ats[0]))
    for at in ats:
        store.add_receipt(Receipt(str(uuid.uuid4()), "lib-1", "library", at, "00aa", "valid", None))
    return store


def test_purge_deletes_only_receipts_older_than_the_cutoff(verifier_db: str) -> None:
    store = store_with_receipts(
        verifier_db, FIVE_YEARS_AGO - 10, FIVE_YEARS_AGO - 1, FIVE_YEARS_AGO, NOW
    )
    assert store.purge_receipts(FIVE_YEARS_AGO, NOW) == 2
    assert [c.at for c in store.checks_of_card("00aa")] == [NOW, FIVE_YEARS_AGO]
    assert store.purge_receipts(FIVE_YEARS_AGO, NOW) == 0


def test_a_cutoff_younger_than_the_retention_is_refused_and_deletes_nothing(
    verifier_db: str,
) -> None:
    store = store_with_receipts(verifier_db, FIVE_YEARS_AGO - 10, NOW - 86_400)
    with pytest.raises(RetentionError, match="kept 5 years: purge before 2021-11-28"):
        store.purge_receipts(FIVE_YEARS_AGO + 1, NOW)
    assert len(store.checks_of_card("00aa")) == 2


def test_a_longer_retention_is_policy_a_shorter_one_is_refused() -> None:
    seven = store_with_receipts("sqlite://", FIVE_YEARS_AGO - 10, retention_years=7)
    with pytest.raises(RetentionError, match="kept 7 years"):
        seven.purge_receipts(FIVE_YEARS_AGO, NOW)
    with pytest.raises(ValueError, match=f"at least {RECEIPT_RETENTION_YEARS} years"):
        VerifierStore.connect("sqlite://", retention_years=4)


def test_the_cutoff_of_29_february_is_28_february() -> None:
    leap = int(dt.datetime(2028, 2, 29, 12, 0, tzinfo=dt.UTC).timestamp())
    cutoff = int(dt.datetime(2023, 2, 28, 12, 0, tzinfo=dt.UTC).timestamp())
    store = store_with_receipts("sqlite://", cutoff - 1)
    assert store.purge_receipts(cutoff, leap) == 1
    with pytest.raises(RetentionError):
        store.purge_receipts(cutoff + 1, leap)
