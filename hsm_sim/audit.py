"""Audit records of the HSM simulator.

Invariant: an :class:`AuditEvent` never holds key material. For a signature it holds the
SHA-256 of the signed data, so that an auditor can match a log line to an artefact; for a
card-key operation (secure-channel session, factory export) the card serial.

:func:`event_to_json` / :func:`event_from_json` give the one JSON form of an event, used on
the wire of :mod:`hsm_sim.server` and in the ceremony's audit journal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from hsm_sim.purpose import KeyPurpose

__all__ = ["AuditEvent", "AuditOp", "event_from_json", "event_to_json"]


class AuditOp(enum.Enum):
    """The operation an audit event records."""

    CREATE_KEY = "create_key"
    GET_SIGNER = "signer"
    SIGN = "sign"
    PUBLIC_KEY = "public_key"
    SCP_SESSION = "scp_session"
    FACTORY_CARD_KEY = "factory_card_key"
    RETIRE_KEY = "retire_key"
    LOGIN = "login"
    """A backend opened (or re-opened after a lost session) its session to the HSM; the
    label is the token label."""


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

    @classmethod
    def outcome(
        cls,
        time: float,
        op: AuditOp,
        label: str,
        purpose: KeyPurpose | None,
        error: type[Exception] | None,
        data_sha256: str | None = None,
        *,
        detail: str = "",
        card_serial: str | None = None,
    ) -> AuditEvent:
        """The event of an operation that succeeded (``error`` None, ``detail`` kept) or was
        refused (``ok`` False, ``detail`` the error class name). Shared by every backend."""
        return cls(
            time=time,
            op=op,
            label=label,
            purpose=purpose,
            ok=error is None,
            detail=detail if error is None else error.__name__,
            data_sha256=data_sha256,
            card_serial=card_serial,
        )


def event_to_json(event: AuditEvent) -> dict[str, Any]:
    """The JSON object of ``event`` (enum members as their values)."""
    return {
        "time": event.time,
        "op": event.op.value,
        "label": event.label,
        "purpose": None if event.purpose is None else event.purpose.value,
        "ok": event.ok,
        "detail": event.detail,
        "data_sha256": event.data_sha256,
        "card_serial": event.card_serial,
    }


def event_from_json(doc: object) -> AuditEvent:
    """Parse :func:`event_to_json` output; raises ValueError if it is not one."""
    if not isinstance(doc, dict):
        raise ValueError("an audit event must be a JSON object")
    try:
        time, label, ok, detail = doc["time"], doc["label"], doc["ok"], doc["detail"]
        purpose = doc["purpose"]
        data_sha256, card_serial = doc["data_sha256"], doc["card_serial"]
        op = AuditOp(doc["op"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not an audit event: {exc}") from exc
    if (
        not isinstance(time, int | float)
        or isinstance(time, bool)
        or not isinstance(label, str)
        or not isinstance(ok, bool)
        or not isinstance(detail, str)
        or not (data_sha256 is None or isinstance(data_sha256, str))
        or not (card_serial is None or isinstance(card_serial, str))
    ):
        raise ValueError("audit event fields have the wrong types")
    return AuditEvent(
        time=float(time),
        op=op,
        label=label,
        purpose=None if purpose is None else KeyPurpose(purpose),
        ok=ok,
        detail=detail,
        data_sha256=data_sha256,
        card_serial=card_serial,
    )
