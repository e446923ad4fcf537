"""Errors raised by the HSM simulator.

Every refusal is a typed exception so that callers cannot mistake a refusal for a result
(pyca style: raise instead of returning a bool). Messages name the label and purpose but
never contain key material.
"""

from __future__ import annotations

__all__ = ["HsmError", "HsmStorageError", "KeyExists", "KeyNotFound", "WrongKeyPurpose"]


class HsmError(Exception):
    """Base class of every error raised by :mod:`hsm_sim`."""


class KeyExists(HsmError):
    """``create_key`` was asked for a label that is already taken (keys are never replaced)."""


class KeyNotFound(HsmError):
    """No key has the requested label."""


class WrongKeyPurpose(HsmError):
    """The key exists but was created for another purpose, or the purpose cannot sign."""


class HsmStorageError(HsmError):
    """The key file cannot be read, decrypted or written (wrong passphrase, corrupt file)."""
