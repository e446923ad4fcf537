"""Staff API for the card lifecycle: lost/stolen reports, re-issues due, applying the card
status events, and reconciliation of cards left behind by interrupted personalizations.

Operators report lost cards and see who is due a new card; supervisors apply the card status
events and abandon orphan jobs. Errors come from the domain (``RightsError`` family: 404, 409,
422) and are mapped by the app's handlers. Responses carry pseudonymous subject ids and card
serials only, never ID numbers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from issuer.api_auth import Operator, Supervisor
from issuer.lifecycle import LostKind, ReissueDue, apply_pending, dues, report_lost
from issuer.reconcile import DEFAULT_STALE_AFTER, abandon, anomalies, find_orphans
from issuer.wiring import IssuerContext


class LostIn(BaseModel):
    kind: LostKind


def cards_router(ctx: IssuerContext, now: Callable[[], dt.datetime]) -> APIRouter:
    """The lifecycle routes on ``ctx``; ``now`` is the app's clock."""
    router = APIRouter(tags=["cards"])

    @router.post("/v1/cards/{serial}/lost")
    def lost(serial: str, body: LostIn, principal: Operator) -> dict[str, Any]:
        """Revokes the lost or stolen card and records its holder as due a new card."""
        at = now()
        due = report_lost(ctx.engine, serial, body.kind, at, principal.name, ctx.keys, ctx.settings)
        return {"serial": serial, "state": "revoked", "reissue_due": _due(due)}

    @router.get("/v1/cards/reissue-due")
    def reissue_due(
        principal: Operator, limit: Annotated[int, Query(ge=1, le=500)] = 500
    ) -> dict[str, Any]:
        with ctx.engine.connect() as conn:
            found = dues(conn, limit)
        return {"due": [_due(d) for d in found]}

    @router.post("/v1/card-events/apply")
    def apply_events(
        principal: Supervisor, limit: Annotated[int | None, Query(ge=1)] = None
    ) -> dict[str, Any]:
        """Applies the pending card status events (what the daily job does)."""
        applied = apply_pending(
            ctx.engine, ctx.keys, ctx.settings, now(), principal.name, limit=limit
        )
        return {
            "applied": [
                {
                    "event_id": a.event_id,
                    "subject_id": a.subject_id,
                    "kind": a.kind,
                    "outcome": a.outcome,
                    "serial": a.serial,
                    "card_state": a.card_state,
                    "due_stars": a.due_stars,
                }
                for a in applied
            ]
        }

    @router.get("/v1/cards/orphans")
    def orphans(
        principal: Supervisor,
        stale_after_minutes: Annotated[int, Query(ge=0, le=10 * 24 * 60)] = int(
            DEFAULT_STALE_AFTER.total_seconds() // 60
        ),
    ) -> dict[str, Any]:
        """Unfinished personalizations idle for ``stale_after_minutes``, and anomalies (states
        the database should never hold: a finding is a bug to investigate)."""
        with ctx.engine.connect() as conn:
            found = find_orphans(conn, now(), dt.timedelta(minutes=stale_after_minutes))
            odd = anomalies(conn)
        return {
            "orphans": [
                {
                    "serial": o.serial,
                    "subject_id": o.subject_id,
                    "state": o.state,
                    "updated_at": o.updated_at.isoformat(),
                }
                for o in found
            ],
            "anomalies": [
                {"kind": a.kind, "subject_id": a.subject_id, "serials": list(a.serials)}
                for a in odd
            ],
        }

    @router.post("/v1/cards/{serial}/abandon")
    def abandon_job(serial: str, principal: Supervisor) -> dict[str, Any]:
        """Gives up an unfinished personalization (the card is INVALID on the status list)."""
        job = abandon(ctx.engine, serial, now(), principal.name, ctx.keys, ctx.settings)
        return {"serial": serial, "state": "abandoned", "previous_state": job.state}

    return router


def _due(due: ReissueDue) -> dict[str, Any]:
    return {
        "subject_id": due.subject_id,
        "stars": due.stars,
        "reason": due.reason,
        "serial": due.serial,
        "since": due.since.isoformat(),
    }
