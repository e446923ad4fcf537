"""The CMAC split used to run the card-key KDF inside a PKCS#11 2.40 token (pure math)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from card_profiles import scp
from hsm_sim.pkcs11_kdf import cmac_last_step, kdf_single_block_input


def aes_oracle(key: bytes):  # type: ignore[no-untyped-def]
    def encrypt_block(block: bytes) -> bytes:
        assert len(block) == 16
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return encryptor.update(block) + encryptor.finalize()

    return encrypt_block


def reference_cmac(key: bytes, message: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 31, 32, 34, 48, 100])
def test_last_cbc_step_gives_the_cmac(length: int) -> None:
    key = os.urandom(32)
    message = os.urandom(length)
    oracle = aes_oracle(key)
    iv, last = cmac_last_step(message, oracle)
    assert oracle(bytes(a ^ b for a, b in zip(iv, last, strict=True))) == reference_cmac(
        key, message
    )


def test_card_key_input_is_the_scp_kdf_block() -> None:
    master, serial = os.urandom(32), os.urandom(8)
    message = kdf_single_block_input(scp.CARD_KEY_LABEL, serial, 16)
    assert reference_cmac(master, message) == scp.derive_card_key(master, serial)


def test_single_block_input_refuses_long_outputs_and_zero_labels() -> None:
    with pytest.raises(ValueError):
        kdf_single_block_input(b"label", b"", 17)
    with pytest.raises(ValueError):
        kdf_single_block_input(b"la\x00bel", b"", 16)
