"""The verifier's one settings object."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def token_sha256(token: str) -> str:
    """The hex SHA-256 of a bearer token, as the settings hold it
    (shell: ``printf '%s' "$TOKEN" | sha256sum``)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class VerifierSettings:
    """``root_public_key`` is the pinned trust-list root (PEM); ``trust_list`` the signed
    list of issuer and status-list keys it vouches for (refreshed by rotation).

    ``database_url``: terminals, used nonces and receipts (``sqlite://`` is in-memory, for
    one process; every instance of a scaled-out verifier must share one database).
    ``operator_tokens``: (operator name, hex SHA-256 of the operator's bearer token) pairs;
    ``issuer_token_sha256``: hex SHA-256 of the issuer service's bearer token (the citizen
    page's "who checked my card"). Without them those endpoints refuse everyone.
    ``benefits``: a signed benefits catalogue loaded at start (newer ones by POST).
    ``seal_key``: the challenge-sealing key all instances share (random per process if
    ``None``). ``terminal_rate_per_s``/``terminal_burst``: each terminal's token bucket,
    per instance.
    """

    root_public_key: Path
    trust_list: Path
    challenge_ttl_s: int = 30
    accept_low_assurance: bool = False
    database_url: str = "sqlite://"
    operator_tokens: tuple[tuple[str, str], ...] = ()
    issuer_token_sha256: str | None = None
    benefits: Path | None = None
    seal_key: bytes | None = None
    terminal_rate_per_s: float = 2.0
    terminal_burst: int = 20

    def __post_init__(self) -> None:
        hashes = [h for _, h in self.operator_tokens]
        if self.issuer_token_sha256 is not None:
            hashes.append(self.issuer_token_sha256)
        for value in hashes:
            if not _SHA256_HEX.fullmatch(value):
                raise RuntimeError("token hashes must be 64 lowercase hex characters (SHA-256)")
        if len(set(hashes)) != len(hashes):
            raise RuntimeError("every operator and the issuer service need their own token")
        if self.seal_key is not None and len(self.seal_key) < 32:
            raise RuntimeError("the challenge seal key must be at least 32 bytes")
        if self.terminal_rate_per_s <= 0 or self.terminal_burst < 1:
            raise RuntimeError("terminal rate must be > 0 per second with a burst of >= 1")

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
        env = os.environ
        root = env.get("STARCARD_ROOT_KEY")
        trust_list = env.get("STARCARD_TRUST_LIST")
        if not root or not trust_list:
            raise RuntimeError(
                "set STARCARD_ROOT_KEY (pinned root, PEM) and STARCARD_TRUST_LIST (signed list)"
            )
        accept_low = env.get("STARCARD_ACCEPT_LOW_ASSURANCE", "no").lower()
        if accept_low not in ("yes", "no"):
            raise RuntimeError("STARCARD_ACCEPT_LOW_ASSURANCE must be yes or no")
        operators = []
        for item in filter(None, env.get("STARCARD_VERIFIER_OPERATORS", "").split(",")):
            name, _, digest = item.partition(":")
            if not name or not digest:
                raise RuntimeError(
                    "STARCARD_VERIFIER_OPERATORS is name:sha256hex[,name:sha256hex...]"
                )
            operators.append((name.strip(), digest.strip().lower()))
        seal = env.get("STARCARD_VERIFIER_SEAL_KEY")
        try:
            seal_key = bytes.fromhex(seal) if seal else None
        except ValueError:
            raise RuntimeError("STARCARD_VERIFIER_SEAL_KEY must be 64 hex characters") from None
        benefits = env.get("STARCARD_VERIFIER_BENEFITS")
        return cls(
            root_public_key=Path(root),
            trust_list=Path(trust_list),
            accept_low_assurance=accept_low == "yes",
            database_url=env.get("STARCARD_VERIFIER_DATABASE_URL", "sqlite:///verifier.db"),
            operator_tokens=tuple(operators),
            issuer_token_sha256=env.get("STARCARD_VERIFIER_ISSUER_TOKEN_SHA256") or None,
            benefits=Path(benefits) if benefits else None,
            seal_key=seal_key,
            terminal_rate_per_s=float(env.get("STARCARD_VERIFIER_RATE_PER_S", "2")),
            terminal_burst=int(env.get("STARCARD_VERIFIER_BURST", "20")),
        )
