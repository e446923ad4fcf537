"""The verifier's status-list acceptance as a pure state machine, one test per attack (in the
manner of python-tuf's ``test_updater_top_level_update.py``): rollback, freeze,
mix-and-match, fast-forward with an untrusted key, decompression bomb, oversized input and
a clock set before the newest ``iat`` already accepted. Each ends in the verdict a merchant
would see where that matters: never ``valid``."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable
from typing import TypeVar

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.keysigner import KeySigner
from verifier.core.challenge import begin, challenge_bytes
from verifier.core.cose import sign1
from verifier.core.credential import CredentialClaims, issue_credential, qr_token_binding
from verifier.core.errors import (
    BadSignature,
    CannotVerify,
    ClockBehindWatermark,
    InputTooLarge,
    MalformedCredential,
    NotYetValid,
    StatusListExpired,
    StatusListMissing,
    StatusListRollback,
    StatusListUriMismatch,
    UntrustedKey,
)
from verifier.core.keys import kid_for, p256_to_point
from verifier.core.status_list import (
    INVALID,
    MAX_LIST_BYTES,
    MAX_TOKEN_BYTES,
    MIN_ENTRIES,
    STATUS_LIST_TYP,
    VALID,
    StatusList,
    StatusListCache,
    issue_status_list,
)
from verifier.core.timing import CLOCK_SKEW_S
from verifier.core.trust import TrustedKey, TrustStore
from verifier.core.verify import Verdict, decide

NOW = 1_767_225_600
DAY = 24 * 3600
YEAR = 365 * DAY
URI_A = "https://sc.example.cn/s/1"
URI_B = "https://other-issuer.example.cn/s/9"
IDX = 4242

STATUS = KeySigner()
CREDENTIAL = KeySigner()
ATTACKER = KeySigner()
TRUST = TrustStore(
    [
        TrustedKey.for_public_key(STATUS.public_key(), "status_list", 0, 2**40),
        TrustedKey.for_public_key(CREDENTIAL.public_key(), "credential", 0, 2**40),
    ]
)
CARD = ec.generate_private_key(ec.SECP256R1())

T = TypeVar("T")


def status_token(
    revoked: dict[int, int] | None = None,
    *,
    iat: int = NOW,
    exp: int = NOW + DAY,
    uri: str = URI_A,
    signer: KeySigner = STATUS,
) -> bytes:
    lst = StatusList(MIN_ENTRIES)
    for idx, value in (revoked or {}).items():
        lst.set(idx, value)
    return issue_status_list(lst, uri, iat, exp, 300, signer, kid_for(signer.public_key()))


def raw_token(lst: bytes, *, signer: KeySigner = STATUS, iat: int = NOW) -> bytes:
    """A status list token around an arbitrary ``lst`` (issue_status_list refuses bad ones)."""
    claims = {2: URI_A, 4: iat + DAY, 6: iat, 65534: 300, 65533: {"bits": 2, "lst": lst}}
    return sign1(
        cbor2.dumps(claims, canonical=True),
        signer,
        kid_for(signer.public_key()),
        {16: STATUS_LIST_TYP},
    )


def tap(cache: StatusListCache, now: int, uri: str = URI_A) -> Verdict:
    """A merchant's verdict for a genuine card whose credential references ``uri``/IDX."""
    claims = CredentialClaims(
        iss="sc.example.cn",
        iat=NOW - YEAR,
        nbf=NOW - YEAR,
        exp=NOW + 3 * YEAR,
        cti=bytes.fromhex("5343000000012345"),
        card_key=p256_to_point(CARD.public_key()),
        status_idx=IDX,
        status_uri=uri,
        star_level=4,
        policy_version="2026.1",
        profile="starcard-v1",
        qr_hash=qr_token_binding("token"),
    )
    credential = issue_credential(claims, CREDENTIAL, kid_for(CREDENTIAL.public_key()))
    state = begin("terminal-7", b"merchant:library", now)
    r, s = decode_dss_signature(CARD.sign(challenge_bytes(state), ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return decide(credential, signature, state, TRUST, cache, now)


def peak_memory(call: Callable[[], T]) -> tuple[int, T | BaseException]:
    """Peak Python heap (bytes) traced while ``call`` runs, and its result or exception."""
    tracemalloc.start()
    try:
        outcome: T | BaseException = call()
    except Exception as exc:  # the caller asserts on it
        outcome = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, outcome


def test_the_tap_helper_gives_valid_with_a_fresh_list() -> None:
    cache = StatusListCache()
    cache.accept(status_token(), TRUST, NOW)
    verdict = tap(cache, NOW)
    assert (verdict.state, verdict.star_level) == ("valid", 4)


# -- rollback ---------------------------------------------------------------------------


def test_attack_rollback() -> None:
    cache = StatusListCache()
    cache.accept(status_token({IDX: INVALID}, iat=NOW + 60), TRUST, NOW + 60)
    older_where_card_was_valid = status_token(iat=NOW)
    with pytest.raises(StatusListRollback):
        cache.accept(older_where_card_was_valid, TRUST, NOW + 120)
    assert cache.watermark[URI_A].iat == NOW + 60
    verdict = tap(cache, NOW + 120)
    assert (verdict.state, verdict.reason_class) == ("invalid", "revoked")


# -- freeze -----------------------------------------------------------------------------


def test_attack_freeze() -> None:
    cache = StatusListCache()
    cache.accept(status_token(exp=NOW + 600), TRUST, NOW)
    assert tap(cache, NOW + 599).state == "valid"
    # The publisher's newer lists are withheld: the held one expires and is never used.
    with pytest.raises(StatusListExpired):
        cache.status_of(URI_A, IDX, NOW + 600)
    verdict = tap(cache, NOW + 600)
    assert (verdict.state, verdict.star_level, verdict.reason_class) == (
        "unknown",
        None,
        "unavailable",
    )
    # A frozen (expired) list replayed to the verifier is not accepted either.
    with pytest.raises(StatusListExpired):
        StatusListCache().accept(status_token(exp=NOW + 600), TRUST, NOW + 600)


# -- mix-and-match ----------------------------------------------------------------------


def test_attack_mix_and_match_list_of_another_uri() -> None:
    """The CDN for URI A serves a genuine, newer list of another URI (where this card's
    index happens to be VALID)."""
    cache = StatusListCache()
    cache.accept(status_token({IDX: INVALID}, iat=NOW), TRUST, NOW)
    other = status_token(iat=NOW + 60, uri=URI_B)
    with pytest.raises(StatusListUriMismatch):
        cache.accept(other, TRUST, NOW + 60, uri=URI_A)
    assert set(cache.watermark) == {URI_A}
    assert tap(cache, NOW + 60).reason_class == "revoked"
    # Held under its own sub, it never answers for URI A.
    cache.accept(other, TRUST, NOW + 60)
    assert cache.status_of(URI_B, IDX, NOW + 60) == VALID
    assert cache.status_of(URI_A, IDX, NOW + 60) == INVALID
    assert tap(cache, NOW + 60).reason_class == "revoked"


def test_attack_mix_and_match_only_list_held_is_of_another_uri() -> None:
    cache = StatusListCache()
    cache.accept(status_token(uri=URI_B), TRUST, NOW)
    with pytest.raises(StatusListMissing):
        cache.status_of(URI_A, IDX, NOW)
    assert tap(cache, NOW).state == "unknown"


def test_attack_mix_and_match_token_signed_with_a_credential_key() -> None:
    cache = StatusListCache()
    forged = status_token(signer=CREDENTIAL)  # a key trusted only for credentials
    with pytest.raises(UntrustedKey):
        cache.accept(forged, TRUST, NOW)
    assert cache.watermark == {} and cache.token(URI_A) is None
    assert tap(cache, NOW).state == "unknown"


def test_attack_mix_and_match_credential_offered_as_a_status_list() -> None:
    credential_key_token = sign1(
        cbor2.dumps({2: URI_A}, canonical=True), STATUS, kid_for(STATUS.public_key()), {16: 61}
    )
    with pytest.raises(MalformedCredential, match="typ"):
        StatusListCache().accept(credential_key_token, TRUST, NOW)


# -- fast-forward -----------------------------------------------------------------------


def test_attack_fast_forward_with_an_untrusted_key() -> None:
    cache = StatusListCache()
    cache.accept(status_token(iat=NOW), TRUST, NOW)
    far_future = status_token(iat=NOW + 10 * YEAR, exp=NOW + 11 * YEAR, signer=ATTACKER)
    with pytest.raises(UntrustedKey):
        cache.accept(far_future, TRUST, NOW + 60)
    # Same kid as the trusted key, attacker's signature: still refused.
    kid_claimed = bytearray(far_future)
    trusted_kid = kid_for(STATUS.public_key())
    at = bytes(kid_claimed).index(kid_for(ATTACKER.public_key()))
    kid_claimed[at : at + 8] = trusted_kid
    with pytest.raises(BadSignature):
        cache.accept(bytes(kid_claimed), TRUST, NOW + 60)
    # The watermark did not move: the publisher's next list is still accepted and no clock
    # error is raised at the real time.
    assert cache.watermark[URI_A].iat == NOW
    cache.accept(status_token({IDX: INVALID}, iat=NOW + 120), TRUST, NOW + 120)
    assert tap(cache, NOW + 120).reason_class == "revoked"


def test_attack_fast_forward_with_a_trusted_key_beyond_the_skew() -> None:
    cache = StatusListCache()
    cache.accept(status_token(iat=NOW), TRUST, NOW)
    ahead = status_token(iat=NOW + CLOCK_SKEW_S + 1, exp=NOW + YEAR)
    with pytest.raises(NotYetValid):
        cache.accept(ahead, TRUST, NOW)
    assert cache.watermark[URI_A].iat == NOW
    assert cache.status_of(URI_A, IDX, NOW) == VALID


# -- decompression bomb -----------------------------------------------------------------


def _zlib_bomb(inflated: int) -> bytes:
    step = bytes(1 << 20)
    deflater = zlib.compressobj(9)
    parts = [deflater.compress(step) for _ in range(inflated // len(step))]
    return b"".join([*parts, deflater.flush()])


BOMB_INFLATED = 256 * 1024 * 1024  # 16 times MAX_LIST_BYTES
BOMB = _zlib_bomb(BOMB_INFLATED)


def test_attack_decompression_bomb() -> None:
    assert len(BOMB) < 512 * 1024 < BOMB_INFLATED // 256
    token = raw_token(BOMB)
    assert len(token) < MAX_TOKEN_BYTES
    cache = StatusListCache()
    peak, outcome = peak_memory(lambda: cache.accept(token, TRUST, NOW))
    assert isinstance(outcome, MalformedCredential) and "too large" in str(outcome)
    print(f"zlib bomb ({len(BOMB)} B -> {BOMB_INFLATED >> 20} MiB): peak {peak / 2**20:.1f} MiB")
    # Bounded by the list cap (plus bytearray over-allocation, at most 1/8) and a few copies
    # of the token, not by the bomb's size.
    assert peak < MAX_LIST_BYTES * 5 // 4 + 6 * len(token) + (1 << 20)
    assert cache.watermark == {}


def test_attack_decompression_bomb_unsigned_is_never_inflated() -> None:
    token = raw_token(BOMB, signer=ATTACKER)
    peak, outcome = peak_memory(lambda: StatusListCache().accept(token, TRUST, NOW))
    assert isinstance(outcome, UntrustedKey)
    assert peak < 6 * len(token) + (1 << 20)  # nothing near an inflated list


def test_a_list_at_the_cap_is_still_accepted() -> None:
    """The bomb guard is not off by one: exactly MAX_LIST_BYTES inflates and parses."""
    at_cap = zlib.compress(bytes(MAX_LIST_BYTES), 9)
    token = raw_token(at_cap)
    held = StatusListCache().accept(token, TRUST, NOW)
    assert held.statuses.size == MAX_LIST_BYTES * 8 // 2
    with pytest.raises(MalformedCredential, match="too large"):
        StatusListCache().accept(raw_token(zlib.compress(bytes(MAX_LIST_BYTES + 1), 9)), TRUST, NOW)


# -- oversized input --------------------------------------------------------------------


def test_attack_oversized_token_input() -> None:
    oversized = b"\xd2" + bytes(MAX_TOKEN_BYTES)  # one byte over the cap
    peak, outcome = peak_memory(lambda: StatusListCache().accept(oversized, TRUST, NOW))
    assert isinstance(outcome, InputTooLarge)
    assert "status list token" in str(outcome)  # the token cap, not only the COSE one
    assert peak < 64 * 1024, "refused before any parsing or copying"
    # At the cap the size check passes and parsing decides (here: not CBOR we accept).
    at_cap = b"\xd2" + bytes(MAX_TOKEN_BYTES - 1)
    with pytest.raises(MalformedCredential) as exc:
        StatusListCache().accept(at_cap, TRUST, NOW)
    assert not isinstance(exc.value, InputTooLarge)


def test_attack_oversized_declared_length_is_not_trusted() -> None:
    """A tiny input announcing a 2**62-byte byte string is refused without allocating it."""
    lie = b"\xd2\x84\x5b" + (2**62).to_bytes(8, "big") + b"\x00" * 16
    peak, outcome = peak_memory(lambda: StatusListCache().accept(lie, TRUST, NOW))
    assert isinstance(outcome, MalformedCredential)
    assert peak < 1 << 20


# -- clock before the watermark ---------------------------------------------------------


def test_attack_clock_before_watermark() -> None:
    cache = StatusListCache()
    cache.accept(status_token(iat=NOW), TRUST, NOW)
    behind = NOW - CLOCK_SKEW_S - 1
    with pytest.raises(ClockBehindWatermark):
        cache.check_clock(behind)
    cache.check_clock(NOW - CLOCK_SKEW_S)
    with pytest.raises(ClockBehindWatermark) as exc:
        cache.status_of(URI_A, IDX, behind)
    assert isinstance(exc.value, CannotVerify) and exc.value.verdict == "unknown"
    verdict = tap(cache, behind)
    assert (verdict.state, verdict.star_level, verdict.reason_class) == (
        "unknown",
        None,
        "unavailable",
    )
    assert "ClockBehindWatermark" in (verdict.diagnostics or "")
    # accept fails closed too, even for a genuine list the wrong clock would take as fresh.
    with pytest.raises(ClockBehindWatermark):
        cache.accept(status_token(iat=behind - 60, uri=URI_B), TRUST, behind)
    assert set(cache.watermark) == {URI_A}
    # Within the documented skew the clock is believed.
    assert cache.status_of(URI_A, IDX, NOW - CLOCK_SKEW_S) == VALID


def test_attack_clock_before_watermark_after_restart() -> None:
    """A terminal restarts with its clock reset (dead RTC battery): the persisted watermark
    alone is enough to notice."""
    cache = StatusListCache()
    cache.accept(status_token(iat=NOW), TRUST, NOW)
    restarted = StatusListCache(cache.watermark)
    epoch_ish = 86_400
    with pytest.raises(ClockBehindWatermark):
        restarted.accept(status_token(iat=epoch_ish, exp=epoch_ish + DAY), TRUST, epoch_ish)
    with pytest.raises(ClockBehindWatermark):
        restarted.status_of(URI_A, IDX, epoch_ish)
    # The clock is checked first, so the card is not called expired: the answer is unknown.
    verdict = tap(restarted, epoch_ish)
    assert (verdict.state, verdict.reason_class) == ("unknown", "unavailable")
