"""The signed trust list: root-pinned, rotation windows, and the attacks it stops."""

from __future__ import annotations

import pytest

from tests.keysigner import KeySigner
from tests.unit.test_verify import NOW, YEAR, World, run
from verifier.core.errors import (
    BadSignature,
    MalformedCredential,
    NotYetValid,
    TrustDataMissing,
    TrustListRollback,
    UntrustedKey,
)
from verifier.core.keys import kid_for
from verifier.core.trust_list import (
    MAX_TRUST_LIST_BYTES,
    TrustListCache,
    TrustListEntry,
    issue_trust_list,
    parse_trust_list,
)
from verifier.core.verify import verify_card

ROOT = KeySigner()
DAY = 86_400
HOUR = 3_600


def signed(
    entries: list[TrustListEntry],
    seq: int = 1,
    iat: int = NOW,
    exp: int = NOW + 7 * DAY,
    root: KeySigner = ROOT,
) -> bytes:
    return issue_trust_list(
        entries, issuer="sc.example.cn", sequence=seq, iat=iat, exp=exp,
        root_signer=root, root_kid=kid_for(root.public_key()),
    )  # fmt: skip


def entries_for(world: World, *, issuer_until: int = NOW + 4 * YEAR) -> list[TrustListEntry]:
    from tests.unit.test_verify import ISSUER, STATUS

    return [
        TrustListEntry.for_key(ISSUER.public_key(), "credential", NOW - YEAR, issuer_until,
                               NOW + 5 * YEAR),
        TrustListEntry.for_key(STATUS.public_key(), "status_list", NOW - YEAR, NOW + 4 * YEAR,
                               NOW + 5 * YEAR),
    ]  # fmt: skip


def test_trust_list_round_trip_gives_a_working_store() -> None:
    world = World()
    trust_list = parse_trust_list(signed(entries_for(world)), ROOT.public_key(), NOW)
    assert trust_list.sequence == 1
    assert [e.purpose for e in trust_list.entries] == ["credential", "status_list"]
    assert run(world, trust=trust_list.store()).star_level == 4


def test_attack_list_signed_by_another_root() -> None:
    with pytest.raises(UntrustedKey, match="pinned root"):
        parse_trust_list(signed(entries_for(World()), root=KeySigner()), ROOT.public_key(), NOW)


def test_attack_tampered_list() -> None:
    data = bytearray(signed(entries_for(World())))
    data[len(data) // 2] ^= 0x01
    with pytest.raises((BadSignature, MalformedCredential)):
        parse_trust_list(bytes(data), ROOT.public_key(), NOW)


def test_attack_rollback_to_an_older_list() -> None:
    cache = TrustListCache(ROOT.public_key())
    cache.accept(signed(entries_for(World()), seq=5), NOW)
    with pytest.raises(TrustListRollback):
        cache.accept(signed(entries_for(World()), seq=4), NOW)
    assert cache.watermark is not None and cache.watermark.sequence == 5


def test_attack_equivocation_same_seq_other_content() -> None:
    cache = TrustListCache(ROOT.public_key())
    first = signed(entries_for(World()), seq=3)
    cache.accept(first, NOW)
    cache.accept(first, NOW)  # the same bytes again are fine
    with pytest.raises(TrustListRollback, match="same seq"):
        cache.accept(signed(entries_for(World(), issuer_until=NOW + YEAR), seq=3), NOW)


def test_attack_rollback_across_restart_via_watermark() -> None:
    cache = TrustListCache(ROOT.public_key())
    cache.accept(signed(entries_for(World()), seq=9), NOW)
    restarted = TrustListCache(ROOT.public_key(), watermark=cache.watermark)
    with pytest.raises(TrustListRollback):
        restarted.accept(signed(entries_for(World()), seq=8), NOW)


def test_attack_freeze_expired_list_is_never_used() -> None:
    data = signed(entries_for(World()), exp=NOW + DAY)
    with pytest.raises(TrustDataMissing):
        parse_trust_list(data, ROOT.public_key(), NOW + DAY)
    cache = TrustListCache(ROOT.public_key())
    cache.accept(data, NOW)
    with pytest.raises(TrustDataMissing):
        cache.store(NOW + DAY)
    assert cache.current is not None
    with pytest.raises(TrustDataMissing):
        run(World(), now=NOW + DAY, trust=cache.current.store())


def test_list_from_the_future_is_refused() -> None:
    with pytest.raises(NotYetValid):
        parse_trust_list(signed(entries_for(World()), iat=NOW + DAY), ROOT.public_key(), NOW)


def test_oversized_list_is_refused_before_parsing() -> None:
    with pytest.raises(MalformedCredential, match="larger"):
        parse_trust_list(bytes(MAX_TRUST_LIST_BYTES + 1), ROOT.public_key(), NOW)


def test_rotation_successor_listed_before_it_signs() -> None:
    """The successor key is published first; credentials it signs before its window opens
    are refused, and the old key keeps verifying what it signed until verify_until."""
    old_world = World(cred_nbf=NOW - DAY)
    successor = KeySigner()
    entries = [
        *entries_for(old_world, issuer_until=NOW),
        TrustListEntry.for_key(successor.public_key(), "credential", NOW + HOUR, NOW + 2 * YEAR,
                               NOW + 3 * YEAR),
    ]  # fmt: skip
    store = parse_trust_list(signed(entries), ROOT.public_key(), NOW).store()
    assert run(old_world, trust=store).star_level == 4  # signed by the old key before rotation
    early = World(signer=successor, cred_nbf=NOW)
    with pytest.raises(UntrustedKey, match="window"):
        run(early, trust=store)  # the successor may not sign before NOW + HOUR
    on_time = World(signer=successor, cred_nbf=NOW + HOUR)
    cred, sig, state = on_time.tap(NOW + HOUR)
    card = verify_card(cred, sig, state, store, on_time.status_cache(), NOW + HOUR)
    assert card.star_level == 4
    late_old = World(cred_nbf=NOW + 10)
    with pytest.raises(UntrustedKey, match="signing window"):
        run(late_old, trust=store)  # the retired key signs nothing new


def test_key_listed_for_status_lists_cannot_sign_credentials() -> None:
    from tests.unit.test_verify import STATUS

    world = World(signer=STATUS)  # credential signed with the status-list key
    store = parse_trust_list(signed(entries_for(world)), ROOT.public_key(), NOW).store()
    with pytest.raises(UntrustedKey):
        run(world, trust=store)


def test_issuing_refuses_inconsistent_lists() -> None:
    world = World()
    with pytest.raises(ValueError, match="at least one"):
        signed([])
    with pytest.raises(ValueError, match="once per purpose"):
        signed(entries_for(world) + entries_for(world)[:1])
    with pytest.raises(ValueError, match="sign_from"):
        TrustListEntry.for_key(ROOT.public_key(), "credential", NOW, NOW, NOW + 1)


def test_ed25519_issuer_key_in_the_trust_list_and_jwks() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from verifier.core.jwks import to_jwks

    ed_key = ed25519.Ed25519PrivateKey.generate().public_key()
    entries = [TrustListEntry.for_key(ed_key, "credential", NOW - DAY, NOW + YEAR, NOW + 2 * YEAR)]
    listed = parse_trust_list(signed(entries), ROOT.public_key(), NOW)
    (entry,) = listed.entries
    assert entry.alg == "EdDSA"
    assert entry.kid == kid_for(ed_key)
    (jwk,) = to_jwks(listed.store().keys)["keys"]  # type: ignore[misc]
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
