from __future__ import annotations

import secrets

import pytest
from cryptography.exceptions import InvalidTag

from issuer.pii import PiiVault


def test_round_trip_and_no_plaintext_in_ciphertext() -> None:
    vault = PiiVault(secrets.token_bytes(32))
    blob = vault.encrypt("11010519491231002X", "id_number")
    assert b"11010519491231002X" not in blob
    assert vault.decrypt(blob, "id_number") == "11010519491231002X"
    assert vault.encrypt("11010519491231002X", "id_number") != blob  # fresh nonce


def test_ciphertext_cannot_move_to_another_column() -> None:
    vault = PiiVault(secrets.token_bytes(32))
    blob = vault.encrypt("张三", "name")
    with pytest.raises(InvalidTag):
        vault.decrypt(blob, "id_number")


def test_blind_index_is_keyed() -> None:
    a, b = PiiVault(secrets.token_bytes(32)), PiiVault(secrets.token_bytes(32))
    assert a.blind_index("x") == a.blind_index("x")
    assert a.blind_index("x") != b.blind_index("x")
