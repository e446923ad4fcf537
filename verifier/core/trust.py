"""Trusted issuer and status-list keys, looked up by ``kid`` and purpose at a given time.

Invariants:

* A :class:`TrustedKey`'s ``kid`` is ``kid_for(public_key)``; its ``alg`` is ``"ES256"``;
  it is trusted for verification while ``not_before <= now < not_after``, and only for
  signatures made in its signing window ``not_before <= signed_at < sign_until``
  (``sign_until <= not_after``). Rotation: a successor key is listed before its window
  opens; a retired key stays listed, unable to sign, until what it signed has expired.
* A key trusted for one purpose is never used for another: a status-list key cannot sign
  credentials and vice versa (``lookup`` raises :class:`UntrustedKey`).
* An empty store, or one past ``valid_until`` (the expiry of the trust list it came from),
  cannot vouch for anything: :class:`TrustDataMissing` (verdict ``unknown``).

The signed trust list (root key, rotation) that fills a store is not part of this module.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from verifier.core.errors import TrustDataMissing, UntrustedKey
from verifier.core.keys import KID_SIZE, IssuerPublicKey, kid_for
from verifier.core.sm2 import Sm2PublicKey

__all__ = ["KeyUse", "TrustStore", "TrustedKey"]

KeyUse = Literal["credential", "status_list"]
_USES: frozenset[str] = frozenset({"credential", "status_list"})
_ALGS: frozenset[str] = frozenset({"ES256", "EdDSA", "SM2SM3"})
"""SM2SM3 keys are accepted only as :class:`~verifier.core.sm2.Sm2PublicKey`; checking their
signatures needs the optional ``[sm2]`` extra (else ``Sm2Unavailable``, verdict unknown)."""


@dataclass(frozen=True)
class TrustedKey:
    """One trusted public key. Construction checks the invariants (``ValueError``)."""

    kid: bytes
    alg: str
    purpose: KeyUse
    public_key: IssuerPublicKey
    not_before: int
    not_after: int
    sign_until: int | None = None
    """End of the signing window (exclusive); None means ``not_after``."""

    def __post_init__(self) -> None:
        if self.alg not in _ALGS:
            raise ValueError(f"unsupported algorithm {self.alg!r}")
        if self.purpose not in _USES:
            raise ValueError(f"unknown key purpose {self.purpose!r}")
        if self.alg == "EdDSA":
            if not isinstance(self.public_key, ed25519.Ed25519PublicKey):
                raise ValueError("EdDSA keys must be Ed25519 public keys")
        elif self.alg == "SM2SM3":
            if not isinstance(self.public_key, Sm2PublicKey):
                raise ValueError("SM2SM3 keys must be SM2 public keys")
        elif not isinstance(self.public_key, ec.EllipticCurvePublicKey) or not isinstance(
            self.public_key.curve, ec.SECP256R1
        ):
            raise ValueError("ES256 keys must be P-256 public keys")
        if not isinstance(self.kid, bytes) or len(self.kid) != KID_SIZE:
            raise ValueError("kid must be 8 bytes")
        if not hmac.compare_digest(self.kid, kid_for(self.public_key)):
            raise ValueError("kid does not match the public key")
        if type(self.not_before) is not int or type(self.not_after) is not int:
            raise ValueError("validity bounds must be ints")
        if self.not_after <= self.not_before:
            raise ValueError("not_after must be after not_before")
        if self.sign_until is not None and not (
            type(self.sign_until) is int and self.not_before < self.sign_until <= self.not_after
        ):
            raise ValueError("sign_until must lie in (not_before, not_after]")

    @classmethod
    def for_public_key(
        cls,
        public_key: ec.EllipticCurvePublicKey,
        purpose: KeyUse,
        not_before: int,
        not_after: int,
    ) -> TrustedKey:
        """A trusted ES256 key with its ``kid`` computed from the key."""
        return cls(kid_for(public_key), "ES256", purpose, public_key, not_before, not_after)

    def valid_at(self, now: int) -> bool:
        """Whether ``now`` lies in ``[not_before, not_after)``."""
        return self.not_before <= now < self.not_after

    def check_signed_at(self, signed_at: int) -> None:
        """Raises :class:`UntrustedKey` unless ``signed_at`` (the signed object's ``iat``)
        lies in the key's signing window: a retired key, or a successor before its time,
        cannot vouch for anything."""
        until = self.not_after if self.sign_until is None else self.sign_until
        if not self.not_before <= signed_at < until:
            raise UntrustedKey(
                "key used outside its signing window",
                detail=f"kid {self.kid.hex()} signs in [{self.not_before}, {until}), "
                f"object issued at {signed_at}",
            )


class TrustStore:
    """An immutable set of :class:`TrustedKey`, at most one per (``kid``, purpose).

    ``valid_until`` is the expiry of the trust data itself (``None``: no expiry, for keys
    pinned in configuration).
    """

    def __init__(self, keys: Iterable[TrustedKey], valid_until: int | None = None) -> None:
        self._keys: dict[tuple[bytes, str], TrustedKey] = {}
        for key in keys:
            slot = (key.kid, key.purpose)
            if slot in self._keys:
                raise ValueError(f"duplicate trusted key {key.kid.hex()} for {key.purpose}")
            self._keys[slot] = key
        self._valid_until = valid_until

    @property
    def keys(self) -> list[TrustedKey]:
        """All trusted keys."""
        return list(self._keys.values())

    @property
    def valid_until(self) -> int | None:
        return self._valid_until

    def lookup(self, kid: bytes, purpose: KeyUse, now: int) -> TrustedKey:
        """The key ``kid`` trusted for ``purpose`` at ``now``.

        Raises :class:`TrustDataMissing` if the store is empty or past ``valid_until``;
        :class:`UntrustedKey` if the kid is unknown, trusted only for another purpose, or
        outside its validity window at ``now``.
        """
        if not self._keys:
            raise TrustDataMissing("no trusted keys are loaded")
        if self._valid_until is not None and now >= self._valid_until:
            raise TrustDataMissing("trust data has expired", detail=f"at {self._valid_until}")
        key = self._keys.get((kid, purpose))
        if key is None:
            others = [p for (k, p) in self._keys if k == kid]
            detail = f"kid {kid.hex()} trusted for {others}" if others else f"kid {kid.hex()}"
            raise UntrustedKey(f"no key trusted for {purpose} with this kid", detail=detail)
        if not key.valid_at(now):
            raise UntrustedKey(
                "key is outside its validity window",
                detail=f"kid {kid.hex()} valid [{key.not_before}, {key.not_after}), now {now}",
            )
        return key
