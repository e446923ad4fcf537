"""Secure-channel cryptography (card_profiles.scp): known answers and independent checks.

* AES-CMAC against RFC 4493 §4 examples.
* The SP 800-108 counter-mode KDF against NIST CAVP vectors (CAVS 14.4 ``KDFCTR_gen.rsp``,
  ``[PRF=CMAC_AES256] [CTRLOCATION=BEFORE_FIXED] [RLEN=32_BITS]``, as shipped in
  pyca/cryptography's ``vectors/cryptography_vectors/KDF/nist-800-108-KBKDF-CTR.txt``).
* Our label/context encoding against two independent implementations: pycryptodome's
  ``SP800_108_Counter`` and pyca/cryptography's ``KBKDFCMAC``.
* C-MAC chaining, cryptograms and the authenticator contract.
"""

from __future__ import annotations

import os

import pytest
from Crypto.Cipher import AES
from Crypto.Hash import CMAC as RefCMAC
from Crypto.Protocol.KDF import SP800_108_Counter
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode

from card_profiles import scp

# RFC 4493 §4: AES-128 key and the 16-byte message of Example 2.
RFC4493_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")

# NIST CAVP SP 800-108 counter mode, CMAC-AES256, counter (32 bits) before the fixed data.
CAVP_CMAC_AES256_BEFORE_FIXED_R32 = [
    pytest.param(
        "ddb0d33e3e978357dfef49349911abb34a8c42421969f1d04ce7e9fb84b2e0f1",
        "298e42650f4ddf30a1fa5dfeacabce3a2e74e50615636d5f64660dc01327d986"
        "f90b2ef79df7e4fd29c4f3289f22e4215e18f74c3863daecf08f3c9c",
        "d052d7e7cc62967101653203e41c2ba3ec7b5fe2cef4595ba5c40b7e7b179505",
        id="COUNT=13,L=256",
    ),
    pytest.param(
        "dabde95d751ff1c132bd49f80f4ee347bf39218cf8bfec61bc3ad865d9aa1182",
        "55da554307ed756764d4e97febb77ce85391b53225ee09417ad57def48ead090"
        "e3d1e7c2ed04f02462a6324ea0163b18f86201c69db27fd50b4c42c5",
        "5cc29221cfa6f3a4ded7afeef5a59c05bac787fc5e98a35ee0c96ba582b05c42f758966566084f69",
        id="COUNT=30,L=320",
    ),
]


def ref_cmac(key: bytes, data: bytes) -> bytes:
    return RefCMAC.new(key, msg=data, ciphermod=AES).digest()


@pytest.mark.parametrize(
    ("message", "mac"),
    [
        ("", "bb1d6929e95937287fa37d129b756746"),
        ("6bc1bee22e409f96e93d7e117393172a", "070a16b46b4d4144f79bdd9dd04a287c"),
    ],
)
def test_aes_cmac_rfc4493(message: str, mac: str) -> None:
    assert scp.aes_cmac(RFC4493_KEY, bytes.fromhex(message)).hex() == mac


@pytest.mark.parametrize(("ki", "fixed", "ko"), CAVP_CMAC_AES256_BEFORE_FIXED_R32)
def test_kdf_counter_mode_nist_cavp(ki: str, fixed: str, ko: str) -> None:
    out = scp.kdf_counter_cmac(bytes.fromhex(ki), bytes.fromhex(fixed), len(ko) // 2)
    assert out.hex() == ko


@pytest.mark.parametrize(("ki", "fixed", "ko"), CAVP_CMAC_AES256_BEFORE_FIXED_R32)
def test_the_cavp_vectors_are_what_an_independent_cmac_gives(ki: str, fixed: str, ko: str) -> None:
    """Guards the transcription of the vectors: pycryptodome's CMAC reproduces them."""
    key, data = bytes.fromhex(ki), bytes.fromhex(fixed)
    blocks = b"".join(ref_cmac(key, i.to_bytes(4, "big") + data) for i in range(1, 4))
    assert blocks[: len(ko) // 2].hex() == ko


@pytest.mark.parametrize("length", [8, 16, 32, 40])
def test_kdf_label_context_encoding_matches_pycryptodome_and_cryptography(length: int) -> None:
    key = os.urandom(32)
    label, context = b"StarCard card key", os.urandom(8)
    ours = scp.kdf(key, label, context, length)
    pycryptodome = SP800_108_Counter(key, length, ref_cmac, label=label, context=context)
    pyca = KBKDFCMAC(
        algorithm=algorithms.AES,
        mode=Mode.CounterMode,
        length=length,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=context,
        fixed=None,
    ).derive(key)
    assert ours == pycryptodome == pyca


def test_card_key_and_session_values_are_the_documented_kdf_calls() -> None:
    master, serial = bytes(range(32)), bytes.fromhex("0102030405060708")
    card_key = scp.derive_card_key(master, serial)
    assert card_key == SP800_108_Counter(
        master, 16, ref_cmac, label=b"StarCard card key", context=serial
    )
    hc, cc = bytes(8), bytes(range(8))
    s_mac = scp.derive_session_mac_key(card_key, hc, cc)
    assert s_mac == SP800_108_Counter(
        card_key, 16, ref_cmac, label=b"StarCard S-MAC", context=hc + cc
    )
    assert scp.card_cryptogram(s_mac, hc, cc) == SP800_108_Counter(
        s_mac, 8, ref_cmac, label=b"StarCard card cryptogram", context=hc + cc
    )
    assert scp.host_cryptogram(s_mac, hc, cc) == SP800_108_Counter(
        s_mac, 8, ref_cmac, label=b"StarCard host cryptogram", context=hc + cc
    )
    assert scp.card_cryptogram(s_mac, hc, cc) != scp.host_cryptogram(s_mac, hc, cc)
    assert scp.derive_card_key(master, bytes.fromhex("0102030405060709")) != card_key


def test_kdf_input_checks() -> None:
    with pytest.raises(ValueError):
        scp.kdf(bytes(16), b"bad\x00label", b"", 16)
    with pytest.raises(ValueError):
        scp.kdf_counter_cmac(bytes(15), b"", 16)
    with pytest.raises(ValueError):
        scp.kdf_counter_cmac(bytes(16), b"", 0)
    with pytest.raises(ValueError):
        scp.derive_card_key(bytes(16), bytes(8))  # the master key is AES-256
    with pytest.raises(ValueError):
        scp.derive_card_key(bytes(32), bytes(7))
    with pytest.raises(ValueError):
        scp.derive_session_mac_key(bytes(16), bytes(8), bytes(9))


def test_mac_chain_round_trip_chaining_and_tamper() -> None:
    s_mac = os.urandom(16)
    host, card = scp.MacChain(s_mac), scp.MacChain(s_mac)
    first = host.wrap(0x84, 0xDA, 0, 0, b"data")
    assert first[:-8] == b"data"
    expected = ref_cmac(s_mac, bytes(16) + bytes.fromhex("84DA0000000C") + b"data")[:8]
    assert first[-8:] == expected
    assert card.verify(0x84, 0xDA, 0, 0, first) == b"data"
    second = host.wrap(0x84, 0xDA, 0, 0, b"data")
    assert second != first  # chained
    with pytest.raises(scp.MacMismatch):
        card.verify(0x84, 0xDA, 0, 0, first)  # replay
    with pytest.raises(scp.MacMismatch):
        card.verify(0x84, 0xDA, 0, 1, second)  # header changed
    with pytest.raises(scp.MacMismatch):
        card.verify(0x84, 0xDA, 0, 0, b"short")
    assert card.verify(0x84, 0xDA, 0, 0, second) == b"data"  # a failure did not advance


def test_static_authenticator_checks_the_card_cryptogram_and_key_version() -> None:
    card_key = os.urandom(16)
    hc, cc = os.urandom(8), os.urandom(8)
    s_mac = scp.derive_session_mac_key(card_key, hc, cc)
    good = scp.CardChallenge(bytes(8), 1, hc, cc, scp.card_cryptogram(s_mac, hc, cc))
    keys = scp.StaticKeyAuthenticator(card_key, key_version=1).open_session(good)
    assert keys.s_mac == s_mac
    assert keys.host_cryptogram == scp.host_cryptogram(s_mac, hc, cc)
    assert card_key.hex() not in repr(keys) and s_mac.hex() not in repr(keys)
    with pytest.raises(scp.CardNotAuthentic):
        scp.StaticKeyAuthenticator(os.urandom(16)).open_session(good)
    with pytest.raises(scp.CardNotAuthentic):
        scp.StaticKeyAuthenticator(card_key, key_version=2).open_session(good)
    with pytest.raises(ValueError):
        scp.CardChallenge(bytes(8), 1, hc, cc, bytes(7))


def test_worked_example_of_the_spec() -> None:
    """The numbers printed in docs/card-starcard-v1.md §6.6 (golden vector)."""
    master = bytes(range(32))
    serial = bytes.fromhex("0102030405060708")
    hc, cc = bytes.fromhex("1011121314151617"), bytes.fromhex("2021222324252627")
    card_key = scp.derive_card_key(master, serial)
    assert card_key.hex() == "5a7508f5b4c3e61b6cdefd5bd1561d85"
    s_mac = scp.derive_session_mac_key(card_key, hc, cc)
    assert s_mac.hex() == "433e1e9b5b513612f5cf2b6544d4bafe"
    assert scp.card_cryptogram(s_mac, hc, cc).hex() == "1d1a70346b79ebeb"
    host = scp.host_cryptogram(s_mac, hc, cc)
    assert host.hex() == "986fe1f06e93fcc8"
    chain = scp.MacChain(s_mac)
    assert chain.wrap(0x84, 0x82, 0x01, 0x00, host).hex() == "986fe1f06e93fcc81e5802f92531b827"
    assert chain.wrap(0x84, 0x46, 0x00, 0x00, b"").hex() == "9680c3858c4024f6"
