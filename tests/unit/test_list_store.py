"""The verifier's on-disk list cache: atomic writes, re-verification on load, watermarks that a
torn, tampered or rolled-back file cannot lower, and ``unknown`` (never ``valid``) on expiry.
Each attack test is named after what it stops."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.keysigner import KeySigner
from verifier.core.errors import (
    CannotVerify,
    StatusListRollback,
    TrustDataMissing,
    TrustListRollback,
)
from verifier.core.keys import kid_for
from verifier.core.status_list import (
    MIN_ENTRIES,
    StatusList,
    issue_status_list,
    parse_status_list_token,
)
from verifier.core.trust_list import TrustListEntry, issue_trust_list, parse_trust_list
from verifier.list_store import (
    STATE_FILE,
    TRUST_FILE,
    CacheRefused,
    ListStore,
    load_service,
    status_file,
)

NOW = 1_795_858_200
DAY = 86_400
URI = "https://sc.example.cn/s/1"
ROOT = KeySigner()
STATUS = KeySigner()
CREDENTIAL = KeySigner()


def trust_list(seq: int, iat: int = NOW - 3600, exp: int = NOW + 30 * DAY) -> bytes:
    entries = [
        TrustListEntry.for_key(STATUS.public_key(), "status_list", 0, 2**40, 2**40),
        TrustListEntry.for_key(CREDENTIAL.public_key(), "credential", 0, 2**40, 2**40),
    ]
    return issue_trust_list(
        entries, issuer="sc.example.cn", sequence=seq, iat=iat, exp=exp,
        root_signer=ROOT, root_kid=kid_for(ROOT.public_key()),
    )  # fmt: skip


def status_token(iat: int, exp: int | None = None, revoked: int | None = None) -> bytes:
    lst = StatusList(MIN_ENTRIES)
    if revoked is not None:
        lst.set(revoked, 1)
    exp = iat + DAY if exp is None else exp
    return issue_status_list(lst, URI, iat, exp, 300, STATUS, kid_for(STATUS.public_key()))


def save(store: ListStore, trust: bytes, token: bytes | None, now: int = NOW) -> None:
    """Persists lists as the sync does after the service accepted them."""
    accepted = parse_trust_list(trust, ROOT.public_key(), now)
    store.save_trust_list(trust, accepted, '"t"')
    if token is not None:
        parsed = parse_status_list_token(token, accepted.store(), now)
        store.save_status_list(1, token, parsed, '"s"')


def test_round_trip_restores_lists_and_watermarks(tmp_path: Path) -> None:
    store = ListStore(tmp_path)
    save(store, trust_list(7), status_token(NOW - 60, revoked=5))
    service = load_service(tmp_path, ROOT.public_key(), NOW)
    assert service.status.status_of(URI, 5, NOW) == 1
    assert service.status.status_of(URI, 6, NOW) == 0
    assert service.status.watermark[URI].iat == NOW - 60
    assert service.trust_lists is not None and service.trust_lists.watermark is not None
    assert service.trust_lists.watermark.sequence == 7
    state = json.loads((tmp_path / STATE_FILE).read_bytes())
    assert state["trust_list"]["etag"] == '"t"' and state["status_lists"]["1"]["etag"] == '"s"'
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE, status_file(1), TRUST_FILE]


def test_tampered_status_list_file_is_refused_with_the_file_named(tmp_path: Path) -> None:
    save(ListStore(tmp_path), trust_list(7), status_token(NOW - 60))
    path = tmp_path / status_file(1)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CacheRefused, match=r"status-1\.cwt does not verify"):
        load_service(tmp_path, ROOT.public_key(), NOW)


def test_trust_list_file_from_another_root_is_refused(tmp_path: Path) -> None:
    save(ListStore(tmp_path), trust_list(7), None)
    rogue = KeySigner()
    forged = issue_trust_list(
        [TrustListEntry.for_key(STATUS.public_key(), "status_list", 0, 2**40, 2**40)],
        issuer="x", sequence=99, iat=NOW, exp=NOW + DAY,
        root_signer=rogue, root_kid=kid_for(rogue.public_key()),
    )  # fmt: skip
    (tmp_path / TRUST_FILE).write_bytes(forged)
    with pytest.raises(CacheRefused, match=r"trust-list\.cbor does not verify against the pinned"):
        load_service(tmp_path, ROOT.public_key(), NOW)


def test_torn_state_file_is_refused(tmp_path: Path) -> None:
    save(ListStore(tmp_path), trust_list(7), status_token(NOW - 60))
    state = tmp_path / STATE_FILE
    state.write_bytes(state.read_bytes()[:40])
    with pytest.raises(CacheRefused, match=r"state\.json is torn or was altered"):
        load_service(tmp_path, ROOT.public_key(), NOW)


def test_rolled_back_list_file_is_refused_and_salvage_keeps_the_watermark(
    tmp_path: Path,
) -> None:
    store = ListStore(tmp_path)
    old, new = status_token(NOW - 120), status_token(NOW - 60)
    seq8 = trust_list(8)
    save(store, trust_list(7), old)
    save(store, seq8, new)
    (tmp_path / status_file(1)).write_bytes(old)  # someone restores the older file
    with pytest.raises(CacheRefused, match="rolled back or altered"):
        load_service(tmp_path, ROOT.public_key(), NOW)
    (tmp_path / TRUST_FILE).write_bytes(trust_list(7))
    with pytest.raises(CacheRefused, match=r"trust-list\.cbor was rolled back"):
        load_service(tmp_path, ROOT.public_key(), NOW)
    salvaged = load_service(tmp_path, ROOT.public_key(), NOW, salvage=True)
    assert salvaged.status.token(URI) is None
    with pytest.raises(CannotVerify):
        salvaged.status.status_of(URI, 0, NOW)  # unknown until a sync, never valid
    with pytest.raises(TrustListRollback):
        salvaged.accept_trust_list(trust_list(7), NOW)
    salvaged.accept_trust_list(seq8, NOW)
    with pytest.raises(StatusListRollback):
        salvaged.accept_status_list(old, NOW)
    assert store.state().status[1].etag is None  # the next sync fetches it in full
    assert store.state().trust_etag is None


def test_state_file_cannot_lower_a_watermark_the_list_exceeds(tmp_path: Path) -> None:
    store = ListStore(tmp_path)
    old = status_token(NOW - 120)
    save(store, trust_list(7), old)
    older_state = (tmp_path / STATE_FILE).read_bytes()
    save(store, trust_list(8), status_token(NOW - 60))
    (tmp_path / STATE_FILE).write_bytes(older_state)  # state lowered (or a crash before it)
    service = load_service(tmp_path, ROOT.public_key(), NOW)
    assert service.status.watermark[URI].iat == NOW - 60
    with pytest.raises(StatusListRollback):
        service.accept_status_list(old, NOW)
    with pytest.raises(TrustListRollback):
        service.accept_trust_list(trust_list(7), NOW)


def test_state_file_cannot_lower_the_watermark_of_an_expired_list(tmp_path: Path) -> None:
    """A frozen (expired) list is not usable, but its own signed watermark still counts: an
    attacker who lowers the state must not get an older list with a later exp accepted."""
    store = ListStore(tmp_path)
    save(store, trust_list(6), status_token(NOW - 120, exp=NOW + 30))
    older_state = (tmp_path / STATE_FILE).read_bytes()
    save(store, trust_list(8, exp=NOW + 60), status_token(NOW - 60, exp=NOW + 60))
    (tmp_path / STATE_FILE).write_bytes(older_state)
    later = NOW + 90  # both held lists have expired by now
    service = load_service(tmp_path, ROOT.public_key(), later)
    with pytest.raises(TrustDataMissing):
        service.trust.lookup(kid_for(STATUS.public_key()), "status_list", later)
    with pytest.raises(TrustListRollback):
        service.accept_trust_list(trust_list(7, exp=NOW + DAY), later)
    with pytest.raises(StatusListRollback):
        service.status.accept(
            status_token(NOW - 100, exp=NOW + DAY),
            parse_trust_list(trust_list(9), ROOT.public_key(), later).store(),
            later,
        )


def test_state_file_raising_a_watermark_fails_closed(tmp_path: Path) -> None:
    store = ListStore(tmp_path)
    save(store, trust_list(7), status_token(NOW - 60))
    state = json.loads((tmp_path / STATE_FILE).read_bytes())
    state["status_lists"]["1"]["iat"] = NOW - 30
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(CacheRefused, match="rolled back or altered"):
        load_service(tmp_path, ROOT.public_key(), NOW)


def test_freeze_expired_lists_load_but_answer_unknown_and_keep_watermarks(
    tmp_path: Path,
) -> None:
    store = ListStore(tmp_path)
    token = status_token(NOW - 60, exp=NOW + 60)
    save(store, trust_list(7, exp=NOW + 120), token)
    later = load_service(tmp_path, ROOT.public_key(), NOW + 90)  # status list expired
    with pytest.raises(CannotVerify):
        later.status.status_of(URI, 0, NOW + 90)
    assert later.status.watermark[URI].iat == NOW - 60
    with pytest.raises(StatusListRollback):
        later.accept_status_list(status_token(NOW - 100, exp=NOW + 1000), NOW + 90)
    much_later = load_service(tmp_path, ROOT.public_key(), NOW + 200)  # trust list too
    with pytest.raises(TrustDataMissing):
        much_later.trust.lookup(kid_for(STATUS.public_key()), "status_list", NOW + 200)
    assert much_later.trust_lists is not None and much_later.trust_lists.watermark is not None
    assert much_later.trust_lists.watermark.sequence == 7


def test_empty_cache_is_refused_offline_and_unknown_when_salvaged(tmp_path: Path) -> None:
    with pytest.raises(CacheRefused, match=r"holds no trust list.*starcard-verifier sync"):
        load_service(tmp_path / "new", ROOT.public_key(), NOW)
    service = load_service(tmp_path / "new", ROOT.public_key(), NOW, salvage=True)
    with pytest.raises(TrustDataMissing):
        service.trust.lookup(kid_for(STATUS.public_key()), "status_list", NOW)
    service.accept_trust_list(trust_list(1), NOW)  # a sync can fill it


def test_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ListStore(tmp_path)
    first, seq7 = status_token(NOW - 120), trust_list(7)
    save(store, seq7, first)

    def power_cut(src: str, dst: str) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="power cut"):
        save(store, trust_list(8), status_token(NOW - 60))
    monkeypatch.undo()
    assert (tmp_path / TRUST_FILE).read_bytes() == seq7
    assert (tmp_path / status_file(1)).read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE, status_file(1), TRUST_FILE]
    service = load_service(tmp_path, ROOT.public_key(), NOW)
    assert service.status.watermark[URI].iat == NOW - 120
