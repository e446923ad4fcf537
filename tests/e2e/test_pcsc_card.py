"""The virtual StarCard through the real stack: pyscard → pcscd → vpcd → card process.

Personalization (over the secure channel) and persistence across re-insertion, a card
yanked mid-session, a card losing power mid-write (its power-loss switch), a hung card, and
the SELECT round-trip time. Cards are made by the harness with its test card key.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from card_profiles.errors import (
    CardIOError,
    CardRemoved,
    CardTimeout,
    NoReader,
    SecurityStatusNotSatisfied,
)
from card_profiles.pcsc import PcscTransport, list_readers, wait_for_card, wait_for_card_absent
from card_profiles.profiles import Lifecycle
from card_profiles.scp import StaticKeyAuthenticator
from card_profiles.starcard import StarCardSession
from card_profiles.virtual.state import load_state
from card_profiles.virtual.vpcd import EXIT_POWER_LOST
from tests.pcsc_harness import READER_BY_PORT, TEST_CARD_KEY, CardProcess, PcscStack

pytestmark = pytest.mark.pcsc

CardFactory = Callable[..., CardProcess]
AUTH = StaticKeyAuthenticator(TEST_CARD_KEY)


def verify(point: bytes, challenge: bytes, signature: bytes) -> None:
    """Raises InvalidSignature unless ``signature`` (r‖s) is ES256 over ``challenge``."""
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.verify(utils.encode_dss_signature(r, s), challenge, ec.ECDSA(hashes.SHA256()))


def test_both_virtual_readers_are_listed(virtual_card: CardFactory) -> None:
    assert set(READER_BY_PORT.values()) <= set(list_readers())


def test_reader_problems_are_typed(pcsc_stack: PcscStack) -> None:
    with pytest.raises(NoReader):
        wait_for_card("No Such Reader 00 00", 0.5)
    with pytest.raises(NoReader):
        PcscTransport.connect("No Such Reader 00 00", timeout_s=1.0)
    empty = READER_BY_PORT[35964]
    wait_for_card_absent(empty, 1.0)
    started = time.monotonic()
    with pytest.raises(CardTimeout):
        wait_for_card(empty, 0.5)
    assert 0.5 <= time.monotonic() - started < 1.5
    with pytest.raises(CardRemoved):
        PcscTransport.connect(empty, timeout_s=1.0)


def test_personalize_then_reinsert_keeps_key_and_credential(virtual_card: CardFactory) -> None:
    card = virtual_card()
    credential = os.urandom(300)
    with PcscTransport.connect(card.reader) as transport:
        session = StarCardSession(transport)
        session.select()
        serial = session.serial()
        assert session.lifecycle() is Lifecycle.PERSONALIZATION
        with pytest.raises(SecurityStatusNotSatisfied):
            session.generate_key()  # no write before mutual authentication
        assert session.open_secure_channel(AUTH).serial == serial
        point = session.generate_key()
        session.write_credential(credential, 1)
        assert session.read_credential() == credential
        challenge = os.urandom(32)
        verify(point, challenge, session.internal_authenticate(challenge))
        session.secure()
        assert session.lifecycle() is Lifecycle.SECURED

    card.stop()  # removed from the reader
    again = virtual_card(state_path=card.state_path)
    with PcscTransport.connect(again.reader) as transport:
        session = StarCardSession(transport)
        session.select()
        assert session.serial() == serial
        assert session.lifecycle() is Lifecycle.SECURED
        assert session.public_key() == point
        assert session.read_credential() == credential
        assert session.credential_version() == 1
        challenge = os.urandom(32)
        verify(point, challenge, session.internal_authenticate(challenge))
        before = session.apdu_count
        session.select()
        session.read_credential()
        session.internal_authenticate(challenge)
        assert session.apdu_count - before == 3


def test_card_killed_mid_session_raises_not_hangs(virtual_card: CardFactory) -> None:
    card = virtual_card()
    with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
        session = StarCardSession(transport)
        session.select()
        session.serial()
        card.kill()
        started = time.monotonic()
        with pytest.raises((CardRemoved, CardIOError)):
            session.serial()
        assert time.monotonic() - started < 5.0
        assert transport.broken
        with pytest.raises(CardIOError):
            session.select()


@pytest.mark.parametrize("commits", [0, 1])
def test_card_losing_power_mid_write_leaves_old_or_new_credential(
    pcsc_stack: PcscStack, tmp_path: Path, commits: int
) -> None:
    """``--power-loss-after 3``: SELECT, INITIALIZE UPDATE and EXTERNAL AUTHENTICATE
    complete, power is lost during PUT CREDENTIAL (before or after its EEPROM write). The
    host gets a card error, the card process leaves the reader with status 3, and the card
    re-inserted holds the old or the new credential, whole."""
    path = tmp_path / "card.json"
    card = CardProcess(path).start()
    with PcscTransport.connect(card.reader) as transport:
        session = StarCardSession(transport)
        session.select()
        session.open_secure_channel(AUTH)
        session.generate_key()
        session.write_credential(b"old credential", 1)
    card.stop()
    torn = CardProcess(path, power_loss_after=3, power_loss_commits=commits).start()
    try:
        with PcscTransport.connect(torn.reader, timeout_s=5.0) as transport:
            session = StarCardSession(transport)
            session.select()
            session.open_secure_channel(AUTH)
            with pytest.raises(CardIOError):
                session.write_credential(b"new credential", 2)
        torn.wait_removed()
        assert torn.proc is not None and torn.proc.wait(timeout=10) == EXIT_POWER_LOST
    finally:
        torn.stop()
    expected = (b"old credential", 1) if commits == 0 else (b"new credential", 2)
    eeprom = load_state(path)
    assert (eeprom.credential, eeprom.credential_version) == expected
    again = CardProcess(path).start()
    try:
        with PcscTransport.connect(again.reader) as transport:
            session = StarCardSession(transport)
            session.select()
            assert session.read_credential() == expected[0]
    finally:
        again.stop()


def test_card_removed_before_connect(virtual_card: CardFactory) -> None:
    card = virtual_card()
    card.stop()
    assert card.returncode == 0, card.log_text()  # SIGTERM is a clean exit
    with pytest.raises(CardRemoved):
        PcscTransport.connect(card.reader, timeout_s=2.0)


def test_hung_card_times_out(virtual_card: CardFactory) -> None:
    card = virtual_card()
    timeout_s = 1.0
    transport = PcscTransport.connect(card.reader, timeout_s=timeout_s)
    try:
        session = StarCardSession(transport)
        session.select()
        card.pause()
        started = time.monotonic()
        with pytest.raises(CardTimeout):
            session.serial()
        elapsed = time.monotonic() - started
        assert timeout_s <= elapsed < timeout_s + 1.0
        assert transport.broken
        with pytest.raises(CardIOError):  # a broken transport refuses at once
            session.serial()
        closing = time.monotonic()
        transport.close()
        assert time.monotonic() - closing < 1.0
    finally:
        card.resume()
        card.kill()
        card.wait_removed()
        transport.close()


def test_fresh_card_after_a_hung_one_is_usable(virtual_card: CardFactory) -> None:
    """The deferred disconnect of a broken transport must not reset or power down the next card."""
    hung = virtual_card()
    transport = PcscTransport.connect(hung.reader, timeout_s=0.5)
    StarCardSession(transport).select()
    hung.pause()
    with pytest.raises(CardTimeout):
        StarCardSession(transport).serial()
    transport.close()
    hung.resume()
    hung.kill()
    hung.wait_removed()
    fresh = virtual_card()
    with PcscTransport.connect(fresh.reader) as transport2:
        session = StarCardSession(transport2)
        session.select()
        time.sleep(0.5)  # leave time for any late disconnect of the old handle
        session.serial()
        session.select()


def test_select_round_trip(virtual_card: CardFactory) -> None:
    card = virtual_card()
    with PcscTransport.connect(card.reader) as transport:
        session = StarCardSession(transport)
        session.select()
        times = []
        for _ in range(100):
            started = time.perf_counter()
            session.select()
            times.append(time.perf_counter() - started)
    median_ms = statistics.median(times) * 1000
    p90_ms = statistics.quantiles(times, n=10)[-1] * 1000
    print(f"\nSELECT round trip through pcscd: median {median_ms:.3f} ms, p90 {p90_ms:.3f} ms")
    assert session.apdu_count == 101
