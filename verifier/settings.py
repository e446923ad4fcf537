"""The verifier's one settings object."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from verifier.core.jwks import trusted_keys_from_jwks
from verifier.core.trust import TrustStore


@dataclass(frozen=True)
class VerifierSettings:
    """``trust_jwks`` is the pinned issuer JWKS (until the signed trust list replaces it)."""

    trust_jwks: Path
    challenge_ttl_s: int = 30
    accept_low_assurance: bool = False

    def trust_store(self) -> TrustStore:
        return TrustStore(trusted_keys_from_jwks(json.loads(self.trust_jwks.read_text())))

    @classmethod
    def from_env(cls) -> VerifierSettings:
        path = os.environ.get("STARCARD_TRUST_JWKS")
        if not path:
            raise RuntimeError("set STARCARD_TRUST_JWKS to the pinned issuer JWKS file")
        accept_low = os.environ.get("STARCARD_ACCEPT_LOW_ASSURANCE", "no").lower()
        if accept_low not in ("yes", "no"):
            raise RuntimeError("STARCARD_ACCEPT_LOW_ASSURANCE must be yes or no")
        return cls(trust_jwks=Path(path), accept_low_assurance=accept_low == "yes")
