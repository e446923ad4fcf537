"""Attacks on a tap of a real issued card (in-process virtual StarCard, the issuer's keys):

* challenge: the response replayed, the sealed handle forged, the challenge expired, the
  handle completed by another terminal, the card's signature over another challenge;
* credential: a clone (the credential copied, the card key not), and a flip of EVERY bit of
  the credential: each must be refused, none may be ``valid``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import VirtualStarCard
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_card, graded_subject
from verifier.core.challenge import begin, challenge_bytes
from verifier.core.verify import decide
from verifier.service import MemoryLedger, VerifierService
from verifier.tap import TapData, read_tap

from .core import Category, Probe
from .world import TS, issuer, verifier


@dataclass
class Issued:
    ctx: IssuerContext
    card: VirtualStarCard

    def read(self, challenge: bytes) -> TapData:
        self.card.reset()
        return read_tap(StarCardSession(InProcessTransport(self.card)), challenge)


@contextmanager
def issued_card(work: Path) -> Iterator[Issued]:
    with issuer(work) as ctx:
        card = factory_card(ctx, work / "card.json")
        subject = graded_subject(ctx, NOW)
        ctx.issuance.personalize(StarCardSession(InProcessTransport(card)), subject, NOW, "f")
        yield Issued(ctx, card)


def sign_with(key: ec.EllipticCurvePrivateKey, challenge: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(challenge, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


Make = Callable[[], VerifierService]


def challenge_scenarios(card: Issued, make: Make) -> dict[str, Callable[[Probe], None]]:
    def replayed(probe: Probe) -> None:
        service = make()
        handle, challenge = service.begin("t-1", b"c", TS)
        data = read_tap(StarCardSession(InProcessTransport(card.card)), challenge)
        first = service.complete(handle, "t-1", data.credential, data.card_signature, TS)
        probe.expect(first.state == "valid", "errors", f"genuine tap was {first.state}")
        probe.fault()
        again = service.complete(handle, "t-1", data.credential, data.card_signature, TS + 1)
        probe.verdict(again.state, "a replayed tap response")

    def forged_handle(probe: Probe) -> None:
        service = make()
        handle, challenge = service.begin("t-1", b"c", TS)
        data = card.read(challenge)
        raw = bytearray(base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4)))
        for at in (0, len(raw) // 2, len(raw) - 1):
            forged = bytearray(raw)
            forged[at] ^= 1
            text = base64.urlsafe_b64encode(bytes(forged)).decode().rstrip("=")
            probe.fault()
            verdict = service.complete(text, "t-1", data.credential, data.card_signature, TS)
            probe.verdict(verdict.state, f"a handle with byte {at} flipped")
        other = VerifierService(trust=service.trust, status=service.status)  # other seal key
        foreign, _ = other.begin("t-1", b"c", TS)
        probe.fault()
        verdict = service.complete(foreign, "t-1", data.credential, data.card_signature, TS)
        probe.verdict(verdict.state, "a handle sealed by another verifier")

    def expired(probe: Probe) -> None:
        service = make()
        handle, challenge = service.begin("t-1", b"c", TS)
        data = card.read(challenge)
        probe.fault()
        late = TS + service.challenge_ttl_s
        verdict = service.complete(handle, "t-1", data.credential, data.card_signature, late)
        probe.verdict(verdict.state, "a tap completed after the challenge expired")

    def other_terminal(probe: Probe) -> None:
        service = make()
        handle, challenge = service.begin("t-1", b"c", TS)
        data = card.read(challenge)
        probe.fault()
        verdict = service.complete(handle, "t-2", data.credential, data.card_signature, TS)
        probe.verdict(verdict.state, "another terminal's challenge")

    def other_challenge(probe: Probe) -> None:
        service = make()
        handle, _ = service.begin("t-1", b"c", TS)
        data = card.read(bytes(32))  # the card signed a challenge of the attacker's choice
        probe.fault()
        verdict = service.complete(handle, "t-1", data.credential, data.card_signature, TS)
        probe.verdict(verdict.state, "a signature over another challenge")

    return {
        "replayed": replayed,
        "forged_handle": forged_handle,
        "expired": expired,
        "other_terminal": other_terminal,
        "signed_other_challenge": other_challenge,
    }


def credential_scenarios(card: Issued, quick: bool) -> dict[str, Callable[[Probe], None]]:
    trust = card.ctx.keys.trust_store()
    status = verifier(card.ctx).status

    def clone(probe: Probe) -> None:
        state = begin("t-1", b"c", TS)
        credential = card.read(challenge_bytes(state)).credential
        for attempt in range(3):
            probe.fault()
            key = ec.generate_private_key(ec.SECP256R1())
            signature = sign_with(key, challenge_bytes(state))
            verdict = decide(credential, signature, state, trust, status, TS)
            probe.verdict(verdict.state, f"clone {attempt} (copied credential, own key)")

    def bit_flips(probe: Probe) -> None:
        state = begin("t-1", b"c", TS)
        data = card.read(challenge_bytes(state))
        genuine = decide(data.credential, data.card_signature, state, trust, status, TS)
        probe.expect(genuine.state == "valid", "errors", f"genuine tap was {genuine.state}")
        bits = range(0, len(data.credential) * 8, 7 if quick else 1)
        for bit in bits:
            flipped = bytearray(data.credential)
            flipped[bit // 8] ^= 1 << (bit % 8)
            probe.fault()
            verdict = decide(bytes(flipped), data.card_signature, state, trust, status, TS)
            probe.verdict(verdict.state, f"the credential with bit {bit} flipped")

    return {"clone": clone, "bit_flip_every_bit": bit_flips}


def run(work: Path, quick: bool) -> list[Category]:
    challenge, credential = Category("challenge"), Category("credential", timeout_s=300)
    with issued_card(work / "taps") as card:
        for name, fn in challenge_scenarios(card, lambda: verifier(card.ctx)).items():
            challenge.run(name, fn)
        for name, fn in credential_scenarios(card, quick).items():
            credential.run(name, fn)
    return [challenge, credential]


class NoReplayLedger(MemoryLedger):
    """CONTROL ONLY: a ledger that never remembers a used nonce."""

    def use_nonce(self, nonce: bytes, expires_at: int, now: int) -> bool:
        return True


def control_no_replay_ledger(work: Path) -> Callable[[Category], None]:
    def weakened(category: Category) -> None:
        with issued_card(work / "control-replay") as card:
            make = lambda: verifier(card.ctx, ledger=NoReplayLedger())  # noqa: E731
            category.run("replayed", challenge_scenarios(card, make)["replayed"])

    return weakened


def control_card_signature_skipped(work: Path) -> Callable[[Category], None]:
    """CONTROL ONLY: the verifier's card-signature check (step 6) replaced by a no-op."""

    def weakened(category: Category) -> None:
        with (
            issued_card(work / "control-clone") as card,
            mock.patch("verifier.core.verify.verify_es256", lambda *_: None),
        ):
            category.run("clone", credential_scenarios(card, True)["clone"])

    return weakened
