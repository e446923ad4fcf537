"""The verifier's one settings object."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class VerifierSettings:
    """``root_public_key`` is the pinned trust-list root (PEM); ``trust_list`` the signed
    list of issuer and status-list keys it vouches for (refreshed by rotation)."""

    root_public_key: Path
    trust_list: Path
    challenge_ttl_s: int = 30
    accept_low_assurance: bool = False

    def root(self) -> ec.EllipticCurvePublicKey:
        """Raises RuntimeError naming the file if it is not an EC public key in PEM."""
        try:
            key = serialization.load_pem_public_key(self.root_public_key.read_bytes())
        except (OSError, ValueError) as exc:
            raise RuntimeError(
                f"cannot read the pinned root key {self.root_public_key}: {exc}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise RuntimeError(f"{self.root_public_key} is not an EC public key")
        return key

    @classmethod
    def from_env(cls) -> VerifierSettings:
        root = os.environ.get("STARCARD_ROOT_KEY")
        trust_list = os.environ.get("STARCARD_TRUST_LIST")
        if not root or not trust_list:
            raise RuntimeError(
                "set STARCARD_ROOT_KEY (pinned root, PEM) and STARCARD_TRUST_LIST (signed list)"
            )
        accept_low = os.environ.get("STARCARD_ACCEPT_LOW_ASSURANCE", "no").lower()
        if accept_low not in ("yes", "no"):
            raise RuntimeError("STARCARD_ACCEPT_LOW_ASSURANCE must be yes or no")
        return cls(
            root_public_key=Path(root),
            trust_list=Path(trust_list),
            accept_low_assurance=accept_low == "yes",
        )
