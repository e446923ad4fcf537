"""Audit records of the HSM simulator.

Invariant: an :class:`AuditEvent` never holds key material. For a signature it holds the
SHA-256 of the signed data, so that an auditor can match a log line to an artefact; for a
card-key operation (secure-channel session, factory export) the card serial.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hsm_sim.purpose import KeyPurpose

__all__ = ["AuditEvent", "AuditOp"]


class AuditOp(enum.Enum):
    """The operation an audit event records."""

    CREATE_KEY = "create_key"
    GET_SIGNER = "signer"
    SIGN = "sign"
    PUBLIC_KEY = "public_key"
    SCP_SESSION = "scp_session"
    FACTORY_CARD_KEY = "factory_card_key"


@dataclass(frozen=True)
class AuditEvent:
    """One operation on the HSM, successful or refused.

    ``time`` is the simulator clock (seconds since the epoch); ``purpose`` is the purpose the
    caller asked for (``None`` when the operation names no purpose); ``ok`` is ``False`` for a
    refusal, and then ``detail`` names the error class (on success ``detail`` is empty, or
    ``"factory_export"`` for a master key created exportable). ``data_sha256`` is set for
    signatures, ``card_serial`` (hex) for card-key operations.
    """

    time: float
    op: AuditOp
    label: str
    purpose: KeyPurpose | None
    ok: bool
    detail: str = ""
    data_sha256: str | None = None
    card_serial: str | None = None
