"""StarCard secure channel: key diversification, session keys, cryptograms and C-MAC.

The byte-level definitions are in ``docs/card-starcard-v1.md`` §6; this module is their one
implementation, shared by the three parties that must agree bit for bit: the card
(:mod:`card_profiles.virtual.starcard_v1`), the host session (:mod:`card_profiles.starcard`,
which MACs commands) and the HSM (:mod:`hsm_sim`, which holds the master key, diversifies
card keys and checks card cryptograms).

The scheme is modelled on GlobalPlatform SCP03 (security level C-MAC), simplified:

* every key is derived with the NIST SP 800-108 KDF in counter mode with AES-CMAC as PRF
  (:func:`kdf`), with a 32-bit counter before the fixed input ``label ‖ 00 ‖ context ‖
  [L]32``;
* ``K_card = KDF(K_master (AES-256), "StarCard card key", serial, 128)``;
* ``S-MAC = KDF(K_card, "StarCard S-MAC", host challenge ‖ card challenge, 128)``;
* the card and host cryptograms are 64-bit KDF outputs under S-MAC with their own labels;
* each command of the session carries ``C-MAC = CMAC(S-MAC, chaining ‖ header ‖ Lc' ‖
  data)[:8]``; the full 16-byte CMAC becomes the next chaining value (:class:`MacChain`).

Invariants: every comparison of a cryptogram or MAC is constant-time
(:func:`hmac.compare_digest`); a :class:`MacChain` only advances on a MAC it produced or
verified; nothing here persists or logs a key.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from card_profiles.errors import CardError

__all__ = [
    "CARD_CRYPTOGRAM_LABEL",
    "CARD_KEY_LABEL",
    "CARD_KEY_LENGTH",
    "CHAINING_LENGTH",
    "CHALLENGE_LENGTH",
    "CLA_SECURE_MESSAGING",
    "CRYPTOGRAM_LENGTH",
    "HOST_CRYPTOGRAM_LABEL",
    "MAC_LENGTH",
    "MASTER_KEY_LENGTH",
    "SCP_PROTOCOL",
    "SECURITY_LEVEL_CMAC",
    "SERIAL_LENGTH",
    "S_MAC_LABEL",
    "CardChallenge",
    "CardNotAuthentic",
    "MacChain",
    "MacMismatch",
    "SecureChannelAuthenticator",
    "SessionKeys",
    "StaticKeyAuthenticator",
    "aes_cmac",
    "card_cryptogram",
    "derive_card_key",
    "derive_session_mac_key",
    "host_cryptogram",
    "kdf",
    "kdf_counter_cmac",
    "open_session_with_card_key",
]

MASTER_KEY_LENGTH = 32
"""K_master is AES-256."""
CARD_KEY_LENGTH = 16
"""K_card and S-MAC are AES-128."""
SERIAL_LENGTH = 8
CHALLENGE_LENGTH = 8
CRYPTOGRAM_LENGTH = 8
MAC_LENGTH = 8
"""C-MAC as transmitted: the first 8 bytes of the 16-byte AES-CMAC."""
CHAINING_LENGTH = 16
SECURITY_LEVEL_CMAC = 0x01
"""EXTERNAL AUTHENTICATE P1: every later command of the session may carry a C-MAC."""
CLA_SECURE_MESSAGING = 0x04
"""CLA bit of a command that carries a C-MAC (proprietary class 80 → 84)."""
SCP_PROTOCOL = 0x01
"""Byte 9 of the INITIALIZE UPDATE response: this secure channel, version 1."""

CARD_KEY_LABEL = b"StarCard card key"
S_MAC_LABEL = b"StarCard S-MAC"
CARD_CRYPTOGRAM_LABEL = b"StarCard card cryptogram"
HOST_CRYPTOGRAM_LABEL = b"StarCard host cryptogram"

_COUNTER_BYTES = 4
_LENGTH_BYTES = 4
_AES_KEY_LENGTHS = (16, 24, 32)


class CardNotAuthentic(CardError):
    """The card did not prove that it holds the diversified key for its serial.

    Raised by a :class:`SecureChannelAuthenticator` when the card cryptogram is wrong or the
    card names a key version the authenticator does not hold: a counterfeit card, or a card
    keyed under another master key.
    """


class MacMismatch(ValueError):
    """A C-MAC did not verify (or the data was too short to carry one)."""


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (NIST SP 800-38B, RFC 4493) of ``data``: 16 bytes."""
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def kdf_counter_cmac(key: bytes, fixed_input: bytes, length: int) -> bytes:
    """NIST SP 800-108 KDF in counter mode, PRF AES-CMAC, counter (32 bits) before the
    fixed input: ``K(i) = CMAC(key, [i]32 ‖ fixed_input)``, i = 1, 2, …; the first
    ``length`` bytes of ``K(1) ‖ K(2) ‖ …``.

    Raises ValueError for a key that is not AES-128/192/256 or a length outside 1..4096.
    """
    if len(key) not in _AES_KEY_LENGTHS:
        raise ValueError("the KDF key must be an AES key (16, 24 or 32 bytes)")
    if not 1 <= length <= 4096:
        raise ValueError("KDF output length must be 1..4096 bytes")
    out = bytearray()
    counter = 1
    while len(out) < length:
        out += aes_cmac(key, counter.to_bytes(_COUNTER_BYTES, "big") + fixed_input)
        counter += 1
    return bytes(out[:length])


def kdf(key: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """SP 800-108 counter-mode KDF with the standard fixed input
    ``label ‖ 00 ‖ context ‖ [L]32`` (L = ``length`` × 8 bits).

    Raises ValueError if ``label`` contains a zero byte (it would make the encoding
    ambiguous) or for the reasons of :func:`kdf_counter_cmac`.
    """
    if b"\x00" in label:
        raise ValueError("the KDF label must not contain a zero byte")
    fixed = label + b"\x00" + context + (length * 8).to_bytes(_LENGTH_BYTES, "big")
    return kdf_counter_cmac(key, fixed, length)


def derive_card_key(master_key: bytes, serial: bytes) -> bytes:
    """K_card (16 bytes) of the card with ``serial``, diversified from the AES-256 master key."""
    if len(master_key) != MASTER_KEY_LENGTH:
        raise ValueError(f"the master key must be {MASTER_KEY_LENGTH} bytes (AES-256)")
    _check_length("serial", serial, SERIAL_LENGTH)
    return kdf(master_key, CARD_KEY_LABEL, serial, CARD_KEY_LENGTH)


def derive_session_mac_key(card_key: bytes, host_challenge: bytes, card_challenge: bytes) -> bytes:
    """S-MAC (16 bytes) of one session, from K_card and both challenges."""
    return kdf(
        _card_key(card_key), S_MAC_LABEL, _context(host_challenge, card_challenge), CARD_KEY_LENGTH
    )


def card_cryptogram(s_mac: bytes, host_challenge: bytes, card_challenge: bytes) -> bytes:
    """The 8-byte cryptogram by which the card proves it holds K_card."""
    context = _context(host_challenge, card_challenge)
    return kdf(_card_key(s_mac), CARD_CRYPTOGRAM_LABEL, context, CRYPTOGRAM_LENGTH)


def host_cryptogram(s_mac: bytes, host_challenge: bytes, card_challenge: bytes) -> bytes:
    """The 8-byte cryptogram by which the host proves it holds K_card (or its HSM does)."""
    context = _context(host_challenge, card_challenge)
    return kdf(_card_key(s_mac), HOST_CRYPTOGRAM_LABEL, context, CRYPTOGRAM_LENGTH)


def _context(host_challenge: bytes, card_challenge: bytes) -> bytes:
    _check_length("host challenge", host_challenge, CHALLENGE_LENGTH)
    _check_length("card challenge", card_challenge, CHALLENGE_LENGTH)
    return host_challenge + card_challenge


def _card_key(key: bytes) -> bytes:
    _check_length("key", key, CARD_KEY_LENGTH)
    return key


def _check_length(what: str, value: bytes, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise ValueError(f"{what} must be {length} bytes")


@dataclass(frozen=True)
class CardChallenge:
    """What the card said in answer to INITIALIZE UPDATE, plus the host challenge sent.

    Raises ValueError on construction if a field has the wrong length or range.
    """

    serial: bytes
    key_version: int
    host_challenge: bytes
    card_challenge: bytes
    card_cryptogram: bytes

    def __post_init__(self) -> None:
        _check_length("serial", self.serial, SERIAL_LENGTH)
        _check_length("host challenge", self.host_challenge, CHALLENGE_LENGTH)
        _check_length("card challenge", self.card_challenge, CHALLENGE_LENGTH)
        _check_length("card cryptogram", self.card_cryptogram, CRYPTOGRAM_LENGTH)
        if not 0 <= self.key_version <= 0xFF:
            raise ValueError("key version must be a byte")


@dataclass(frozen=True)
class SessionKeys:
    """What the host needs to finish the handshake and MAC the session's commands.

    ``s_mac`` is an ephemeral session key (it leaves the HSM, as with SCP03 and any HSM);
    K_card never does.
    """

    host_cryptogram: bytes
    s_mac: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_length("host cryptogram", self.host_cryptogram, CRYPTOGRAM_LENGTH)
        _check_length("S-MAC", self.s_mac, CARD_KEY_LENGTH)


class SecureChannelAuthenticator(Protocol):
    """The host's key holder for mutual authentication (in production: the HSM).

    ``open_session`` checks the card cryptogram (constant-time) and returns the host
    cryptogram and S-MAC. It raises :class:`CardNotAuthentic` if the cryptogram is wrong or
    the key version is unknown; it never returns K_card.
    """

    def open_session(self, challenge: CardChallenge) -> SessionKeys: ...


def open_session_with_card_key(card_key: bytes, challenge: CardChallenge) -> SessionKeys:
    """The host side of the handshake given K_card (what the HSM does after diversifying).

    Raises :class:`CardNotAuthentic` if the card cryptogram is wrong.
    """
    hc, cc = challenge.host_challenge, challenge.card_challenge
    s_mac = derive_session_mac_key(card_key, hc, cc)
    if not hmac.compare_digest(card_cryptogram(s_mac, hc, cc), challenge.card_cryptogram):
        raise CardNotAuthentic(f"card {challenge.serial.hex()}: card cryptogram does not verify")
    return SessionKeys(host_cryptogram(s_mac, hc, cc), s_mac)


class StaticKeyAuthenticator:
    """A :class:`SecureChannelAuthenticator` holding one K_card in memory.

    For tests and card-manufacture tools only: production authenticates through the HSM,
    which never exports K_card. ``key_version`` (if given) must match the card's.
    """

    def __init__(self, card_key: bytes, key_version: int | None = None) -> None:
        self._card_key = _card_key(card_key)
        self._key_version = key_version

    def open_session(self, challenge: CardChallenge) -> SessionKeys:
        if self._key_version is not None and challenge.key_version != self._key_version:
            raise CardNotAuthentic(f"card key version {challenge.key_version} is not held")
        return open_session_with_card_key(self._card_key, challenge)


class MacChain:
    """C-MAC with chaining for one session, on either side of it.

    ``C-MAC = CMAC(S-MAC, chaining ‖ CLA ‖ INS ‖ P1 ‖ P2 ‖ Lc' ‖ data)[:8]`` where ``Lc'``
    is the length of ``data`` plus 8, as two big-endian bytes, and CLA is the byte as sent
    (secure-messaging bit, and chaining bit for a chain part, included). The full 16-byte
    CMAC becomes the next chaining value; the first is 16 zero bytes.
    """

    def __init__(self, s_mac: bytes, chaining: bytes = bytes(CHAINING_LENGTH)) -> None:
        self._key = _card_key(s_mac)
        _check_length("chaining value", chaining, CHAINING_LENGTH)
        self._chaining = chaining

    def _full_mac(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        lc = (len(data) + MAC_LENGTH).to_bytes(2, "big")
        return aes_cmac(self._key, self._chaining + bytes([cla, ins, p1, p2]) + lc + data)

    def wrap(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        """``data ‖ C-MAC`` for a command; advances the chain."""
        full = self._full_mac(cla, ins, p1, p2, data)
        self._chaining = full
        return data + full[:MAC_LENGTH]

    def verify(self, cla: int, ins: int, p1: int, p2: int, data_and_mac: bytes) -> bytes:
        """Check the trailing C-MAC; return the data without it and advance the chain.

        Raises :class:`MacMismatch` (the chain does not advance) if the MAC is wrong or the
        data is shorter than a MAC.
        """
        if len(data_and_mac) < MAC_LENGTH:
            raise MacMismatch("command too short to carry a C-MAC")
        data, mac = data_and_mac[:-MAC_LENGTH], data_and_mac[-MAC_LENGTH:]
        full = self._full_mac(cla, ins, p1, p2, data)
        if not hmac.compare_digest(full[:MAC_LENGTH], mac):
            raise MacMismatch("C-MAC does not verify")
        self._chaining = full
        return data
