"""The ``Signer`` port as :mod:`verifier.core` sees it.

Structurally identical to ``hsm_sim.Signer`` (declared again here so that the pure core
does not import the HSM package): ``algorithm`` is ``"ES256"``, ``public_key()`` returns the
P-256 public key, ``sign(data)`` returns the 64-byte raw ``r || s`` ECDSA signature over
SHA-256(``data``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

__all__ = ["Signer"]


@runtime_checkable
class Signer(Protocol):
    """A signing key held elsewhere (HSM, simulator, test double)."""

    @property
    def algorithm(self) -> str:
        """The algorithm name, ``"ES256"``."""
        ...

    def public_key(self) -> EllipticCurvePublicKey:
        """The public half of the signing key."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte raw ``r || s`` ECDSA P-256 signature over SHA-256(``data``)."""
        ...
