"""The ``Signer`` port: what the issuer needs from an HSM to sign credentials and lists.

Invariants of every implementation:

* ``algorithm`` is the JOSE/COSE algorithm name; only ``"ES256"`` exists today.
* ``sign(data)`` returns exactly 64 bytes, the raw ``r || s`` of an ECDSA P-256 signature
  over SHA-256(``data``) (each half big-endian, left-padded to 32 bytes), which is the COSE
  and JOSE signature format. The hash is computed by the signer, not by the caller.
* No method returns private key material.

``verifier.core`` declares a structurally identical Protocol of its own so that it does not
import this package; any object satisfying one satisfies the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from hsm_sim.purpose import KeyPurpose

__all__ = ["BoundSigner", "Signer"]


@runtime_checkable
class Signer(Protocol):
    """A signing key that never leaves its container."""

    @property
    def algorithm(self) -> str:
        """The algorithm name, ``"ES256"``."""
        ...

    def public_key(self) -> EllipticCurvePublicKey:
        """The public half of the signing key."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Sign ``data``; return the 64-byte raw ``r || s`` ECDSA P-256/SHA-256 signature."""
        ...


class BoundSigner:
    """A :class:`Signer` bound to one key of an HSM backend; holds no private key.

    ``sign_in_hsm(label, purpose, data)`` is the backend's own signing call (in-process
    simulator, server round trip or PKCS#11 token); it enforces the purpose and audits.
    """

    def __init__(
        self,
        sign_in_hsm: Callable[[str, KeyPurpose, bytes], bytes],
        label: str,
        purpose: KeyPurpose,
        public_key: EllipticCurvePublicKey,
        backend: str,
    ) -> None:
        self._sign_in_hsm = sign_in_hsm
        self._label = label
        self._purpose = purpose
        self._public_key = public_key
        self._backend = backend

    @property
    def algorithm(self) -> str:
        return "ES256"

    @property
    def label(self) -> str:
        return self._label

    def public_key(self) -> EllipticCurvePublicKey:
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        """Sign in the HSM: 64-byte raw ``r || s`` over SHA-256(``data``), audited there."""
        return self._sign_in_hsm(self._label, self._purpose, data)

    def __repr__(self) -> str:
        return f"<{self._backend} signer {self._label!r} {self._purpose.value}>"
