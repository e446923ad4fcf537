"""Errors raised by the HSM simulator.

Every refusal is a typed exception so that callers cannot mistake a refusal for a result
(pyca style: raise instead of returning a bool). Messages name the label and purpose but
never contain key material.
"""

from __future__ import annotations

__all__ = [
    "CardCryptogramMismatch",
    "ExportNotAllowed",
    "HsmError",
    "HsmStorageError",
    "KeyExists",
    "KeyNotFound",
    "WrongKeyPurpose",
]


class HsmError(Exception):
    """Base class of every error raised by :mod:`hsm_sim`."""


class KeyExists(HsmError):
    """``create_key`` was asked for a label that is already taken (keys are never replaced)."""


class KeyNotFound(HsmError):
    """No key has the requested label."""


class WrongKeyPurpose(HsmError):
    """The key exists but was created for another purpose, or the purpose cannot do this.

    E.g. a signing purpose asked to diversify card keys, a diversification key asked to sign
    or for a public key, or ``create_key`` (P-256) asked for a diversification key.
    """


class ExportNotAllowed(HsmError):
    """The factory operation was asked for a card key, but the master key was not created
    with ``factory_export=True``."""


class CardCryptogramMismatch(HsmError):
    """The card cryptogram of a secure-channel handshake does not verify: the card does not
    hold the key diversified for its serial (counterfeit, or keyed by another master)."""


class HsmStorageError(HsmError):
    """The key file cannot be read, decrypted or written (wrong passphrase, corrupt file)."""
