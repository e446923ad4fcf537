"""The StarCard card-key KDF inside a PKCS#11 2.40 token that has no KDF mechanism.

``K_card = CMAC(K_master, [1]32 ‖ "StarCard card key" ‖ 00 ‖ serial ‖ [128]32)`` (one block
of the SP 800-108 counter KDF, :func:`card_profiles.scp.derive_card_key`). SoftHSM 2.6
implements PKCS#11 2.40: it has ``CKM_AES_CMAC`` (sign only: its output would land in host
memory) and ``CKM_AES_{ECB,CBC}_ENCRYPT_DATA`` (derive: the output becomes a new key
object), but not PKCS#11 3.0's ``CKM_SP800_108_COUNTER_KDF``.

AES-CMAC is CBC-MAC with a masked last block, so the last CBC step can be a *derive*:
``K_card = E_K(C_{n-1} ⊕ M_n*)`` where ``C_{n-1}`` is the CBC chaining value over the first
``n-1`` blocks and ``M_n*`` the last block padded and XORed with the CMAC subkey
(``K1``/``K2`` from ``L = E_K(0¹²⁸)``). ``CKM_AES_CBC_ENCRYPT_DATA`` with IV ``C_{n-1}`` and
data ``M_n*`` yields exactly that block as the value of a new, sensitive, non-extractable
AES-128 key. The host must therefore learn ``L`` and ``C_1 … C_{n-1}``: AES outputs under
the master key for public inputs (all serial-independent except the last chaining value).
They are obtained as values of throw-away derived keys (:func:`token_aes_block`).

What this does and does not protect (stated precisely in ``docs/hsm.md``): the master key's
value never leaves the token and K_card never exists outside it; but the master key needs
``CKA_DERIVE``, and PKCS#11 2.40 cannot bind a key to one KDF, so any logged-in session can
use it as an AES oracle and compute any K_card. The PIN is the boundary, as for every
PKCS#11 2.40 key.

:func:`cmac_last_step` is pure (tested against ``cryptography``'s CMAC with an in-memory AES
oracle); :func:`derive_cmac_key` drives a python-pkcs11 session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism

__all__ = [
    "BLOCK",
    "cmac_last_step",
    "derive_cmac_key",
    "kdf_single_block_input",
    "token_aes_block",
]

BLOCK = 16
_RB = 0x87  # the CMAC constant for a 128-bit block


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _double(block: bytes) -> bytes:
    """Multiplication by x in GF(2^128) (the CMAC subkey step, RFC 4493 §2.3)."""
    value = int.from_bytes(block, "big") << 1
    if value >> 128:
        value = (value & ((1 << 128) - 1)) ^ _RB
    return value.to_bytes(BLOCK, "big")


def kdf_single_block_input(label: bytes, context: bytes, length: int) -> bytes:
    """The PRF input of the first (only) block of :func:`card_profiles.scp.kdf`:
    ``[1]32 ‖ label ‖ 00 ‖ context ‖ [L]32``. ``length`` must be 1..16 bytes (ValueError)."""
    if not 1 <= length <= BLOCK:
        raise ValueError("a single-block KDF output is 1..16 bytes")
    if b"\x00" in label:
        raise ValueError("the KDF label must not contain a zero byte")
    return (1).to_bytes(4, "big") + label + b"\x00" + context + (length * 8).to_bytes(4, "big")


def cmac_last_step(message: bytes, aes_block: Callable[[bytes], bytes]) -> tuple[bytes, bytes]:
    """Split AES-CMAC(K, ``message``) into ``(iv, last)`` with ``CMAC = E_K(iv ⊕ last)``.

    ``aes_block(x)`` must return ``E_K(x)`` for a 16-byte ``x``; it is called for ``L`` and
    for each block but the last.
    """
    subkey1 = _double(aes_block(bytes(BLOCK)))
    count = max(1, -(-len(message) // BLOCK))
    blocks = [message[i * BLOCK : (i + 1) * BLOCK] for i in range(count)]
    last = blocks[-1]
    if len(last) == BLOCK:
        last_masked = _xor(last, subkey1)
    else:
        padded = last + b"\x80" + bytes(BLOCK - 1 - len(last))
        last_masked = _xor(padded, _double(subkey1))
    chaining = bytes(BLOCK)
    for block in blocks[:-1]:
        chaining = aes_block(_xor(chaining, block))
    return chaining, last_masked


def token_aes_block(base_key: Any, block: bytes) -> bytes:
    """``E_K(block)`` under the token key ``base_key`` via a throw-away derived key."""
    derived = base_key.derive_key(
        KeyType.AES,
        128,
        mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
        mechanism_param=block,
        store=False,
        template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
    )
    try:
        value = derived[Attribute.VALUE]
    finally:
        with contextlib.suppress(pkcs11.PKCS11Error):  # a session object dies with the session
            derived.destroy()
    if not isinstance(value, bytes) or len(value) != BLOCK:
        raise ValueError("the token returned a derived block of the wrong size")
    return value


def derive_cmac_key(base_key: Any, message: bytes, *, extractable: bool) -> Any:
    """A new AES-128 *session* key whose value is AES-CMAC(``base_key``, ``message``).

    With ``extractable=False`` the key is sensitive and non-extractable and may only
    ``CKM_AES_CMAC``-sign; with ``extractable=True`` (factory export only) its value can be
    read. The caller destroys it.
    """
    iv, last = cmac_last_step(message, lambda block: token_aes_block(base_key, block))
    template: dict[Attribute, Any] = {
        Attribute.SENSITIVE: not extractable,
        Attribute.EXTRACTABLE: extractable,
        Attribute.SIGN: not extractable,
        Attribute.VERIFY: False,
        Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False,
        Attribute.DERIVE: False,
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
    }
    return base_key.derive_key(
        KeyType.AES,
        128,
        mechanism=Mechanism.AES_CBC_ENCRYPT_DATA,
        mechanism_param=(iv, last),
        store=False,
        template=template,
    )
