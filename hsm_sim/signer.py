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

from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

__all__ = ["Signer"]


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
