"""The issuer's one settings object. Built by the composition root, never at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class IssuerSettings:
    """Everything the issuer needs to run.

    ``database_url`` is any SQLAlchemy URL (SQLite file by default, PostgreSQL in production).
    ``hsm_path`` is where ``hsm_sim`` keeps its encrypted key file (None: keys in memory only).
    Secrets (``hsm_passphrase``, ``pii_key``) come from the environment in production.

    ``card_master_key_label`` names the AES-256 master key in the HSM from which every card's
    secure-channel key is diversified; cards carry ``card_key_version`` to name it.
    ``card_factory_export`` decides, when that master key is first created, whether the HSM's
    factory operation may hand out diversified card keys (card manufacture). The embedded
    default (demo, tests: the issuer also "manufactures" its virtual cards) is True;
    :meth:`from_env` (production) makes it False unless ``STARCARD_CARD_FACTORY_EXPORT=1``.
    """

    database_url: str = "sqlite:///starcard.db"
    hsm_backend: str = "sim"
    """``sim`` (embedded hsm_sim), ``remote`` (hsm_sim server) or ``pkcs11``."""
    hsm_path: Path | None = None
    hsm_socket: Path | None = None
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token: str | None = None
    pkcs11_pin: str = field(default="", repr=False)
    hsm_passphrase: bytes = field(default=b"", repr=False)
    pii_key: bytes = field(default=b"", repr=False)
    issuer_id: str = "sc.example.cn"
    public_base_url: str = "https://sc.example.cn"
    status_list_id: int = 1
    credential_valid_days: int = 365
    status_list_ttl_s: int = 300
    status_list_valid_s: int = 86_400
    credential_key_label: str = "issuer-es256-1"
    root_key_label: str = "root-es256-1"
    trust_list_valid_s: int = 30 * 86_400
    trust_list_path: Path | None = None
    """A trust list signed at a key ceremony (production); None: sign one with the embedded
    root at start-up (demo and tests)."""
    root_public_key_path: Path | None = None
    """PEM of the offline root key that signed ``trust_list_path``."""
    status_key_label: str = "status-es256-1"
    policy_path: Path | None = None
    card_master_key_label: str = "card-master-1"
    card_key_version: int = 1
    card_factory_export: bool = False
    audit_key_label: str = "audit-es256-1"
    """The HSM key (purpose AUDIT_CHECKPOINT_SIGNING) that signs audit-log checkpoints."""
    audit_checkpoint_every: int = 1000
    """A signed audit checkpoint is written automatically after this many events."""
    verifier_url: str | None = None
    """Base URL of the verifier whose ``GET /v1/cards/{serial}/receipts`` feeds the citizen's
    "who checked my card" (None: the page says it is not available)."""
    verifier_token: str | None = field(default=None, repr=False)
    """The issuer service's bearer token at that verifier."""

    @property
    def status_list_uri(self) -> str:
        return f"{self.public_base_url}/s/{self.status_list_id}"

    def citizen_url(self, qr_token: str) -> str:
        return f"{self.public_base_url}/c/{qr_token}"

    @classmethod
    def from_env(cls) -> IssuerSettings:
        """Reads ``STARCARD_*`` variables; refuses to start without the two secrets."""
        missing = [
            n for n in ("STARCARD_HSM_PASSPHRASE", "STARCARD_PII_KEY") if n not in os.environ
        ]
        if missing:
            raise RuntimeError(f"set {', '.join(missing)} (secrets are never defaulted)")
        pii_key = bytes.fromhex(os.environ["STARCARD_PII_KEY"])
        return cls(
            database_url=os.environ.get("STARCARD_DATABASE_URL", cls.database_url),
            hsm_backend=os.environ.get("STARCARD_HSM_BACKEND", "sim"),
            hsm_path=Path(os.environ.get("STARCARD_HSM_PATH", "starcard-hsm.json")),
            hsm_socket=Path(s) if (s := os.environ.get("STARCARD_HSM_SOCKET")) else None,
            pkcs11_module=os.environ.get("STARCARD_PKCS11_MODULE", cls.pkcs11_module),
            pkcs11_token=os.environ.get("STARCARD_PKCS11_TOKEN"),
            pkcs11_pin=os.environ.get("STARCARD_PKCS11_PIN", ""),
            hsm_passphrase=os.environ["STARCARD_HSM_PASSPHRASE"].encode(),
            pii_key=pii_key,
            public_base_url=os.environ.get("STARCARD_PUBLIC_URL", cls.public_base_url),
            card_factory_export=os.environ.get("STARCARD_CARD_FACTORY_EXPORT") == "1",
            audit_key_label=os.environ.get("STARCARD_AUDIT_KEY_LABEL", cls.audit_key_label),
            audit_checkpoint_every=_positive_int(
                "STARCARD_AUDIT_CHECKPOINT_EVERY", cls.audit_checkpoint_every
            ),
            verifier_url=os.environ.get("STARCARD_VERIFIER_URL"),
            verifier_token=os.environ.get("STARCARD_VERIFIER_TOKEN"),
        )


def _positive_int(name: str, default: int) -> int:
    """``name`` from the environment as a whole number of at least 1 (``default`` if unset).

    Raises:
        RuntimeError: the value is not such a number; the message names the variable.
    """
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise RuntimeError(f"{name} must be a whole number of at least 1, got {text!r}")
    return value
