"""Token Status List: draft vectors, large lists, token verification, and the cache's
defences, with tests named after the attack they stop."""

from __future__ import annotations

import base64
import json
import random
import zlib
from pathlib import Path

import cbor2
import pytest

from tests.keysigner import KeySigner
from verifier.core.cose import sign1
from verifier.core.errors import (
    BadSignature,
    MalformedCredential,
    NotYetValid,
    StatusIndexOutOfRange,
    StatusListExpired,
    StatusListMissing,
    StatusListRollback,
    UntrustedKey,
)
from verifier.core.keys import kid_for
from verifier.core.status_list import (
    INVALID,
    MAX_LIST_BYTES,
    MIN_ENTRIES,
    SUSPENDED,
    VALID,
    StatusList,
    StatusListCache,
    issue_status_list,
    parse_status_list_token,
)
from verifier.core.trust import TrustedKey, TrustStore

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "status_list_draft.json"
NOW = 1_767_225_600
URI = "https://sc.example.cn/s/1"
DAY = 24 * 3600


STATUS_SIGNER = KeySigner()
STATUS_KID = kid_for(STATUS_SIGNER.public_key())
CRED_SIGNER = KeySigner()
CRED_KID = kid_for(CRED_SIGNER.public_key())
TRUST = TrustStore(
    [
        TrustedKey.for_public_key(STATUS_SIGNER.public_key(), "status_list", 0, 2**40),
        TrustedKey.for_public_key(CRED_SIGNER.public_key(), "credential", 0, 2**40),
    ]
)


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_list(revoked: dict[int, int] | None = None) -> StatusList:
    lst = StatusList(MIN_ENTRIES)
    for idx, value in (revoked or {}).items():
        lst.set(idx, value)
    return lst


def token(
    lst: StatusList | None = None,
    *,
    iat: int = NOW,
    exp: int = NOW + DAY,
    ttl: int = 3600,
    uri: str = URI,
) -> bytes:
    return issue_status_list(lst or make_list(), uri, iat, exp, ttl, STATUS_SIGNER, STATUS_KID)


# -- the list itself --------------------------------------------------------------------


def load_vectors() -> list[dict[str, object]]:
    doc = json.loads(VECTORS.read_text())
    vectors = doc["vectors"]
    assert len(vectors) == 2
    return vectors  # type: ignore[no-any-return]


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: str(v["name"]))
def test_draft_example_vectors(vector: dict[str, object]) -> None:
    bits = vector["bits"]
    statuses = vector["statuses"]
    assert isinstance(bits, int) and isinstance(statuses, list)
    lst_bytes = b64url_decode(str(vector["lst"]))
    assert lst_bytes.hex() == vector["lst_zlib_hex"]

    decoded = StatusList.decode(lst_bytes, bits)
    assert decoded.to_bytes().hex() == vector["packed_hex"]
    assert [decoded.get(i) for i in range(len(statuses))] == statuses

    built = StatusList(len(statuses), bits)
    for i, value in enumerate(statuses):
        built.set(i, value)
    assert built.to_bytes().hex() == vector["packed_hex"]
    assert built.encode() == lst_bytes, "zlib level 9 reproduces the draft's bytes exactly"


def test_bit_order_index_zero_is_least_significant() -> None:
    lst = StatusList(8, bits=2)
    lst.set(0, 3)
    assert lst.to_bytes() == b"\x03\x00"
    lst.set(3, 1)
    assert lst.to_bytes() == b"\x43\x00"
    lst.set(4, 2)
    assert lst.to_bytes() == b"\x43\x02"
    lst.set(0, 0)
    assert [lst.get(i) for i in range(8)] == [0, 0, 0, 1, 2, 0, 0, 0]


def test_set_and_get_check_ranges() -> None:
    lst = StatusList(10, bits=2)
    with pytest.raises(IndexError):
        lst.get(10)
    with pytest.raises(IndexError):
        lst.set(-1, 1)
    with pytest.raises(ValueError):
        lst.set(0, 4)
    with pytest.raises(ValueError):
        StatusList(10, bits=3)


def test_million_entries_one_percent_revoked_round_trip() -> None:
    rng = random.Random(20260101)
    lst = StatusList(1_000_000, bits=2)
    chosen = rng.sample(range(1_000_000), 10_000)
    for n, idx in enumerate(chosen):
        lst.set(idx, SUSPENDED if n % 10 == 0 else INVALID)
    encoded = lst.encode()
    print(f"1M entries, 1% revoked: {len(encoded)} bytes compressed")
    back = StatusList.decode(encoded, 2)
    assert back == lst
    assert back.size == 1_000_000
    for n, idx in enumerate(chosen[:500]):
        assert back.get(idx) == (SUSPENDED if n % 10 == 0 else INVALID)
    assert sum(1 for i in range(0, 1_000_000, 997) if back.get(i) != VALID) <= 50

    parsed = parse_status_list_token(token(lst), TRUST, NOW)
    assert parsed.statuses == lst


def test_zlib_bomb_is_rejected() -> None:
    bomb = zlib.compress(bytes(MAX_LIST_BYTES + 1), 9)
    with pytest.raises(MalformedCredential, match="too large"):
        StatusList.decode(bomb, 2)


def test_trailing_or_truncated_zlib_is_rejected() -> None:
    good = StatusList(64).encode()
    with pytest.raises(MalformedCredential):
        StatusList.decode(good + b"\x00", 2)
    with pytest.raises(MalformedCredential):
        StatusList.decode(good[:-2], 2)
    with pytest.raises(MalformedCredential):
        StatusList.decode(b"not zlib", 2)


# -- the token --------------------------------------------------------------------------


def test_token_round_trip() -> None:
    lst = make_list({5: INVALID, 6: SUSPENDED})
    data = token(lst)
    parsed = parse_status_list_token(data, TRUST, NOW)
    assert (parsed.uri, parsed.iat, parsed.exp, parsed.ttl) == (URI, NOW, NOW + DAY, 3600)
    assert parsed.raw == data and parsed.kid == STATUS_KID
    assert parsed.statuses.get(5) == INVALID and parsed.statuses.get(6) == SUSPENDED
    with pytest.raises(TypeError):
        parsed.statuses.set(5, VALID)


def test_token_accepts_compressed_lst_bytes() -> None:
    lst = make_list({7: INVALID})
    data = issue_status_list(lst.encode(), URI, NOW, NOW + DAY, 60, STATUS_SIGNER, STATUS_KID)
    assert parse_status_list_token(data, TRUST, NOW).statuses.get(7) == INVALID


def test_issued_lists_have_at_least_min_entries() -> None:
    with pytest.raises(ValueError, match=str(MIN_ENTRIES)):
        token(StatusList(MIN_ENTRIES - 1))
    with pytest.raises(ValueError):
        token(iat=NOW, exp=NOW)


def test_token_signed_with_a_credential_key_is_untrusted() -> None:
    data = issue_status_list(make_list(), URI, NOW, NOW + DAY, 60, CRED_SIGNER, CRED_KID)
    with pytest.raises(UntrustedKey):
        parse_status_list_token(data, TRUST, NOW)


def test_forged_token_is_rejected() -> None:
    data = bytearray(token())
    data[-1] ^= 0x01
    with pytest.raises(BadSignature):
        parse_status_list_token(bytes(data), TRUST, NOW)


def test_token_with_credential_typ_is_rejected() -> None:
    claims = {2: URI, 4: NOW + DAY, 6: NOW, 65534: 60, 65533: {"bits": 2, "lst": b"x"}}
    data = sign1(cbor2.dumps(claims, canonical=True), STATUS_SIGNER, STATUS_KID, {16: 61})
    with pytest.raises(MalformedCredential, match="typ"):
        parse_status_list_token(data, TRUST, NOW)


def test_token_missing_ttl_is_rejected() -> None:
    claims = {2: URI, 4: NOW + DAY, 6: NOW, 65533: {"bits": 2, "lst": make_list().encode()}}
    data = sign1(
        cbor2.dumps(claims, canonical=True),
        STATUS_SIGNER,
        STATUS_KID,
        {16: "application/statuslist+cwt"},
    )
    with pytest.raises(MalformedCredential, match="required set"):
        parse_status_list_token(data, TRUST, NOW)


# -- the cache: attacks -----------------------------------------------------------------


def test_rollback_attack_older_list_is_rejected() -> None:
    cache = StatusListCache()
    cache.accept(token(make_list({9: INVALID}), iat=NOW + 60), TRUST, NOW + 60)
    old_where_card_was_valid = token(make_list(), iat=NOW)
    with pytest.raises(StatusListRollback):
        cache.accept(old_where_card_was_valid, TRUST, NOW + 120)
    assert cache.status_of(URI, 9, NOW + 120) == INVALID


def test_rollback_attack_across_restart_is_rejected_via_watermark() -> None:
    cache = StatusListCache()
    cache.accept(token(make_list({9: INVALID}), iat=NOW + 60), TRUST, NOW + 60)
    persisted = cache.watermark
    restarted = StatusListCache(persisted)
    with pytest.raises(StatusListRollback):
        restarted.accept(token(make_list(), iat=NOW), TRUST, NOW + 120)
    with pytest.raises(StatusListMissing):
        restarted.status_of(URI, 9, NOW + 120)


def test_equivocation_attack_same_iat_different_list_is_rejected() -> None:
    cache = StatusListCache()
    cache.accept(token(make_list({9: INVALID})), TRUST, NOW)
    with pytest.raises(StatusListRollback, match="conflicts"):
        cache.accept(token(make_list()), TRUST, NOW)


def test_freeze_attack_expired_list_is_never_used() -> None:
    cache = StatusListCache()
    cache.accept(token(exp=NOW + 600), TRUST, NOW)
    assert cache.status_of(URI, 1, NOW + 599) == VALID
    with pytest.raises(StatusListExpired):
        cache.status_of(URI, 1, NOW + 600)
    with pytest.raises(StatusListExpired):
        cache.status_of(URI, 1, NOW + 10 * DAY)


def test_freeze_attack_expired_list_is_not_accepted() -> None:
    cache = StatusListCache()
    with pytest.raises(StatusListExpired):
        cache.accept(token(exp=NOW + 600), TRUST, NOW + 600)
    assert cache.token(URI) is None
    assert cache.watermark == {}


def test_list_from_the_future_is_rejected() -> None:
    with pytest.raises(NotYetValid):
        StatusListCache().accept(token(iat=NOW + 3600, exp=NOW + DAY), TRUST, NOW)


def test_newer_list_replaces_held_list() -> None:
    cache = StatusListCache()
    cache.accept(token(iat=NOW), TRUST, NOW)
    assert cache.status_of(URI, 9, NOW) == VALID
    cache.accept(token(make_list({9: SUSPENDED}), iat=NOW + 1), TRUST, NOW + 1)
    assert cache.status_of(URI, 9, NOW + 1) == SUSPENDED
    assert cache.watermark[URI].iat == NOW + 1


def test_offering_the_held_token_again_is_a_no_op() -> None:
    cache = StatusListCache()
    data = token()
    cache.accept(data, TRUST, NOW)
    cache.accept(data, TRUST, NOW + 5)
    assert cache.token(URI) is not None
    restarted = StatusListCache(cache.watermark)
    restarted.accept(data, TRUST, NOW + 10)
    assert restarted.status_of(URI, 0, NOW + 10) == VALID


def test_missing_list_and_index_out_of_range() -> None:
    cache = StatusListCache()
    with pytest.raises(StatusListMissing):
        cache.status_of(URI, 0, NOW)
    cache.accept(token(), TRUST, NOW)
    with pytest.raises(StatusListMissing):
        cache.status_of("https://sc.example.cn/s/2", 0, NOW)
    with pytest.raises(StatusIndexOutOfRange):
        cache.status_of(URI, MIN_ENTRIES, NOW)


def test_refresh_due_follows_ttl() -> None:
    cache = StatusListCache()
    assert cache.refresh_due(URI, NOW)
    cache.accept(token(ttl=300), TRUST, NOW)
    assert not cache.refresh_due(URI, NOW + 299)
    assert cache.refresh_due(URI, NOW + 300)
