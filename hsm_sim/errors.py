"""Errors raised by every HSM backend (simulator, remote simulator, PKCS#11).

Every refusal is a typed exception so that callers cannot mistake a refusal for a result
(pyca style: raise instead of returning a bool). Messages name the label and purpose but
never contain key material.

By who is at fault:

* the caller asked for something the key may not do: :class:`KeyNotFound`,
  :class:`KeyExists`, :class:`WrongKeyPurpose`, :class:`KeyRetired`,
  :class:`ExportNotAllowed`, :class:`CardCryptogramMismatch` (the card is at fault);
* our configuration is wrong (fix it, retrying will not help): :class:`HsmConfigError` and
  its subclasses :class:`HsmModuleNotFound`, :class:`HsmTokenNotFound`,
  :class:`HsmPinIncorrect`; :class:`NotSupported` (this backend cannot do the operation);
  :class:`HsmStorageError` (key file unreadable, wrong passphrase);
* infrastructure (retryable): :class:`HsmUnavailable` and :class:`HsmTimeout`. After a
  timeout the outcome of the operation is unknown (e.g. check ``has_key`` after a
  ``create_key`` that timed out).
"""

from __future__ import annotations

__all__ = [
    "CardCryptogramMismatch",
    "ExportNotAllowed",
    "HsmConfigError",
    "HsmError",
    "HsmModuleNotFound",
    "HsmPinIncorrect",
    "HsmStorageError",
    "HsmTimeout",
    "HsmTokenNotFound",
    "HsmUnavailable",
    "KeyExists",
    "KeyNotFound",
    "KeyRetired",
    "NotSupported",
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


class KeyRetired(HsmError):
    """The key was retired: it signs (or diversifies) nothing any more. Its public key stays
    readable so that what it signed can still be verified."""


class NotSupported(HsmError):
    """This backend cannot perform the operation without weakening a guarantee (e.g. it
    would have to export a key); the message says what is missing."""


class HsmConfigError(HsmError):
    """The HSM is misconfigured: retrying will not help, the configuration must change."""


class HsmModuleNotFound(HsmConfigError):
    """The PKCS#11 module (shared library) cannot be loaded from the configured path."""


class HsmTokenNotFound(HsmConfigError):
    """No token with the configured label is present (the message lists those that are)."""


class HsmPinIncorrect(HsmConfigError):
    """The token refused the PIN (or the PIN is locked). Never retried automatically, so that
    one misconfiguration costs the token's retry counter exactly one attempt."""


class HsmUnavailable(HsmError):
    """The HSM cannot be reached or lost its session and re-opening it failed (retryable)."""


class HsmTimeout(HsmUnavailable):
    """An HSM call did not return within its time bound; its outcome is unknown."""
