"""verify_card and decide: every step, and the three-state verdict."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.keysigner import KeySigner
from verifier.core.challenge import ChallengeState, begin, challenge_bytes, check_presented
from verifier.core.credential import CredentialClaims, issue_credential, qr_token_binding
from verifier.core.errors import (
    ChallengeExpired,
    ChallengeMismatch,
    CloneSuspected,
    Expired,
    NotYetValid,
    Revoked,
    StatusListExpired,
    StatusListMissing,
    StatusUnrecognized,
    Suspended,
    TrustDataMissing,
    UntrustedKey,
    VerificationError,
)
from verifier.core.jwks import to_jwks
from verifier.core.keys import kid_for, p256_to_point
from verifier.core.status_list import (
    INVALID,
    MIN_ENTRIES,
    SUSPENDED,
    StatusList,
    StatusListCache,
    issue_status_list,
)
from verifier.core.timing import CLOCK_SKEW_S
from verifier.core.trust import TrustedKey, TrustStore
from verifier.core.verify import Verdict, VerifiedCard, decide, verify_card

NOW = 1_767_225_600
YEAR = 365 * 24 * 3600
URI = "https://sc.example.cn/s/1"
IDX = 4242


class VirtualCard:
    """Test double for the card: INTERNAL AUTHENTICATE = ECDSA over SHA-256(challenge)."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def point(self) -> bytes:
        return p256_to_point(self._key.public_key())

    def internal_authenticate(self, challenge: bytes) -> bytes:
        assert len(challenge) == 32
        r, s = decode_dss_signature(self._key.sign(challenge, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


ISSUER = KeySigner()
STATUS = KeySigner()
TRUST = TrustStore(
    [
        TrustedKey.for_public_key(ISSUER.public_key(), "credential", NOW - YEAR, NOW + 5 * YEAR),
        TrustedKey.for_public_key(STATUS.public_key(), "status_list", NOW - YEAR, NOW + 5 * YEAR),
    ]
)


@dataclass
class World:
    card: VirtualCard = field(default_factory=VirtualCard)
    statuses: dict[int, int] = field(default_factory=dict)
    list_exp: int = NOW + 24 * 3600
    cred_exp: int = NOW + 3 * YEAR
    cred_nbf: int = NOW
    signer: KeySigner = ISSUER

    def credential(self) -> bytes:
        claims = CredentialClaims(
            iss="sc.example.cn",
            iat=self.cred_nbf,
            nbf=self.cred_nbf,
            exp=self.cred_exp,
            cti=bytes.fromhex("5343000000012345"),
            card_key=self.card.point(),
            status_idx=IDX,
            status_uri=URI,
            star_level=4,
            policy_version="2026.1",
            profile="starcard-v1",
            qr_hash=qr_token_binding("token"),
        )
        return issue_credential(claims, self.signer, kid_for(self.signer.public_key()))

    def status_cache(self) -> StatusListCache:
        lst = StatusList(MIN_ENTRIES)
        for idx, value in self.statuses.items():
            lst.set(idx, value)
        cache = StatusListCache()
        token = issue_status_list(
            lst, URI, NOW - 60, self.list_exp, 300, STATUS, kid_for(STATUS.public_key())
        )
        cache.accept(token, TRUST, NOW)
        return cache

    def tap(self, now: int = NOW) -> tuple[bytes, bytes, ChallengeState]:
        state = begin("terminal-7", b"merchant:library", now)
        return self.credential(), self.card.internal_authenticate(challenge_bytes(state)), state


def run(world: World, now: int = NOW, trust: TrustStore = TRUST) -> VerifiedCard:
    cred, sig, state = world.tap()
    return verify_card(cred, sig, state, trust, world.status_cache(), now)


def verdict(world: World, now: int = NOW, trust: TrustStore = TRUST) -> Verdict:
    cred, sig, state = world.tap()
    return decide(cred, sig, state, trust, world.status_cache(), now)


def test_valid_card() -> None:
    card = run(World())
    assert card == VerifiedCard(
        serial=bytes.fromhex("5343000000012345"),
        star_level=4,
        policy_version="2026.1",
        profile="starcard-v1",
        exp=NOW + 3 * YEAR,
        assurance="high",
    )
    v = verdict(World())
    assert (v.state, v.star_level, v.reason_class) == ("valid", 4, None)
    assert v.serial == "5343000000012345"


def test_revoked_card() -> None:
    with pytest.raises(Revoked):
        run(World(statuses={IDX: INVALID}))
    v = verdict(World(statuses={IDX: INVALID}))
    assert (v.state, v.star_level, v.reason_class) == ("invalid", None, "revoked")
    assert v.serial == "5343000000012345"


def test_suspended_card() -> None:
    with pytest.raises(Suspended):
        run(World(statuses={IDX: SUSPENDED}))
    v = verdict(World(statuses={IDX: SUSPENDED}))
    assert (v.state, v.reason_class) == ("invalid", "suspended")


def test_undefined_status_value_is_unknown() -> None:
    with pytest.raises(StatusUnrecognized):
        run(World(statuses={IDX: 3}))
    assert verdict(World(statuses={IDX: 3})).state == "unknown"


def test_clone_without_the_card_key_is_detected() -> None:
    world = World()
    cred, _, state = world.tap()
    clone = VirtualCard()  # copied credential, but not the card's private key
    sig = clone.internal_authenticate(challenge_bytes(state))
    with pytest.raises(CloneSuspected):
        verify_card(cred, sig, state, TRUST, world.status_cache(), NOW)
    v = decide(cred, sig, state, TRUST, world.status_cache(), NOW)
    assert (v.state, v.reason_class) == ("invalid", "not_genuine")


def test_response_replayed_from_another_terminal_is_detected() -> None:
    world = World()
    cred = world.credential()
    elsewhere = begin("terminal-1", b"merchant:library", NOW)
    recorded = world.card.internal_authenticate(challenge_bytes(elsewhere))
    here = begin("terminal-7", b"merchant:library", NOW, nonce=elsewhere.nonce)
    with pytest.raises(CloneSuspected):
        verify_card(cred, recorded, here, TRUST, world.status_cache(), NOW)


@pytest.mark.parametrize("sig", [b"", b"\x00" * 64, b"\x01" * 10, b"\xff" * 64])
def test_garbage_card_signature_is_clone_suspected(sig: bytes) -> None:
    world = World()
    cred, _, state = world.tap()
    with pytest.raises(CloneSuspected):
        verify_card(cred, sig, state, TRUST, world.status_cache(), NOW)


def test_expired_credential() -> None:
    world = World(cred_nbf=NOW - YEAR, cred_exp=NOW - CLOCK_SKEW_S)
    with pytest.raises(Expired):
        run(world)
    assert verdict(world).reason_class == "expired"


def test_expiry_allows_documented_clock_skew() -> None:
    world = World(cred_nbf=NOW - YEAR, cred_exp=NOW - CLOCK_SKEW_S + 1)
    assert run(world).star_level == 4


def test_not_yet_valid_credential() -> None:
    with pytest.raises(NotYetValid):
        run(World(cred_nbf=NOW + CLOCK_SKEW_S + 1))
    assert run(World(cred_nbf=NOW + CLOCK_SKEW_S)).star_level == 4


def test_stale_status_list_is_unknown_never_valid() -> None:
    world = World(list_exp=NOW + 600)
    cred, sig, state = world.tap()
    cache = world.status_cache()
    later = NOW + 601
    state = begin("terminal-7", b"ctx", later)
    sig = world.card.internal_authenticate(challenge_bytes(state))
    with pytest.raises(StatusListExpired):
        verify_card(cred, sig, state, TRUST, cache, later)
    v = decide(cred, sig, state, TRUST, cache, later)
    assert (v.state, v.star_level, v.reason_class) == ("unknown", None, "unavailable")


def test_stale_list_hides_even_a_revocation_as_unknown() -> None:
    world = World(statuses={IDX: INVALID}, list_exp=NOW + 600)
    cred, _, _ = world.tap()
    cache = world.status_cache()
    later = NOW + 700
    state = begin("terminal-7", b"ctx", later)
    sig = world.card.internal_authenticate(challenge_bytes(state))
    assert decide(cred, sig, state, TRUST, cache, later).state == "unknown"


def test_missing_status_list_is_unknown() -> None:
    world = World()
    cred, sig, state = world.tap()
    with pytest.raises(StatusListMissing):
        verify_card(cred, sig, state, TRUST, StatusListCache(), NOW)
    assert decide(cred, sig, state, TRUST, StatusListCache(), NOW).state == "unknown"


def test_credential_signed_with_status_list_key_is_untrusted() -> None:
    world = World(signer=STATUS)
    with pytest.raises(UntrustedKey):
        run(world)
    assert verdict(world).reason_class == "untrusted"


def test_unknown_issuer_is_untrusted() -> None:
    with pytest.raises(UntrustedKey):
        run(World(signer=KeySigner()))


def test_issuer_key_outside_its_window_is_untrusted() -> None:
    retired = TrustStore(
        [
            TrustedKey.for_public_key(ISSUER.public_key(), "credential", NOW - YEAR, NOW),
            TrustedKey.for_public_key(STATUS.public_key(), "status_list", 0, NOW + YEAR),
        ]
    )
    with pytest.raises(UntrustedKey, match="window"):
        run(World(), trust=retired)


def test_no_trust_data_is_unknown() -> None:
    world = World()
    cred, sig, state = world.tap()
    with pytest.raises(TrustDataMissing):
        verify_card(cred, sig, state, TrustStore([]), world.status_cache(), NOW)
    expired = TrustStore(TRUST.keys, valid_until=NOW)
    assert decide(cred, sig, state, expired, world.status_cache(), NOW).state == "unknown"


def test_challenge_expired() -> None:
    world = World()
    cred, sig, state = world.tap(NOW)
    with pytest.raises(ChallengeExpired):
        verify_card(cred, sig, state, TRUST, world.status_cache(), NOW + 30)
    assert verify_card(cred, sig, state, TRUST, world.status_cache(), NOW + 29).star_level == 4


def test_presented_challenge_must_match() -> None:
    state = begin("terminal-7", b"ctx", NOW)
    check_presented(state, challenge_bytes(state))
    with pytest.raises(ChallengeMismatch):
        check_presented(state, bytes(32))


def test_challenge_bytes_known_answer() -> None:
    state = begin("T1", b"\x01\x02", NOW, nonce=bytes(range(32)))
    expected = hashlib.sha256(
        b"starcard-auth-v1\x00" + bytes(range(32)) + b"\x00\x02T1" + b"\x00\x02\x01\x02"
    ).digest()
    assert challenge_bytes(state) == expected
    assert state.expires_at == NOW + 30
    assert len(begin("T1", b"", NOW).nonce) == 32
    assert begin("T1", b"", NOW).nonce != begin("T1", b"", NOW).nonce
    with pytest.raises(ValueError):
        begin("T1", b"", NOW, nonce=b"short")
    with pytest.raises(ValueError):
        begin("T1", b"", NOW, ttl_s=0)


class ExplodingCache(StatusListCache):
    def status_of(self, uri: str, idx: int, now: int) -> int:
        raise RuntimeError("bug")


def test_decide_turns_an_unexpected_bug_into_unknown() -> None:
    world = World()
    cred, sig, state = world.tap()
    v = decide(cred, sig, state, TRUST, ExplodingCache(), NOW)
    assert (v.state, v.reason_class) == ("unknown", "internal_error")


def test_decide_is_never_valid_when_verification_raises() -> None:
    world = World()
    cred, sig, state = world.tap()
    cache = world.status_cache()
    cases = [
        (b"", sig),
        (cred[:-1], sig),
        (cred + b"\x00", sig),
        (cred, sig[:-1]),
        (cred, bytes(64)),
    ]
    for credential, card_sig in cases:
        v = decide(credential, card_sig, state, TRUST, cache, NOW)
        assert v.state == "invalid" and v.star_level is None
        assert v.diagnostics
        with pytest.raises(VerificationError):
            verify_card(credential, card_sig, state, TRUST, cache, NOW)


def test_forged_credential_yields_no_serial_on_the_receipt() -> None:
    world = World(signer=KeySigner())
    assert verdict(world).serial is None


def test_jwks() -> None:
    jwks = to_jwks(TRUST.keys)
    keys = jwks["keys"]
    assert isinstance(keys, list) and len(keys) == 2
    jwk = keys[0]
    assert {k: jwk[k] for k in ("kty", "crv", "alg", "use", "key_ops", "starcard_purpose")} == {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "use": "sig",
        "key_ops": ["verify"],
        "starcard_purpose": "credential",
    }
    assert "=" not in jwk["x"] + jwk["y"] + jwk["kid"]

    def unb64(s: str) -> bytes:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    assert unb64(jwk["kid"]) == kid_for(ISSUER.public_key())
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(unb64(jwk["x"]), "big"),
        int.from_bytes(unb64(jwk["y"]), "big"),
        ec.SECP256R1(),
    )
    assert numbers == ISSUER.public_key().public_numbers()
    assert len(unb64(jwk["x"])) == len(unb64(jwk["y"])) == 32


def test_attack_credential_signed_before_the_key_was_listed() -> None:
    """A key cannot vouch for credentials dated before its signing window opened."""
    world = World(cred_nbf=NOW - 2 * YEAR, cred_exp=NOW + YEAR)
    with pytest.raises(UntrustedKey, match="signing window"):
        run(world)


def test_attack_retired_key_signs_a_new_credential() -> None:
    """A key retired from signing (rotation) stays trusted for what it signed before, and
    refuses anything dated after its retirement."""
    retired = TrustStore(
        [
            dataclasses.replace(
                TrustedKey.for_public_key(
                    ISSUER.public_key(), "credential", NOW - YEAR, NOW + 5 * YEAR
                ),
                sign_until=NOW - 60,
            ),
            TrustedKey.for_public_key(
                STATUS.public_key(), "status_list", NOW - YEAR, NOW + 5 * YEAR
            ),
        ]
    )
    old = World(cred_nbf=NOW - 120)
    assert run(old, trust=retired).star_level == 4
    with pytest.raises(UntrustedKey, match="signing window"):
        run(World(cred_nbf=NOW), trust=retired)
