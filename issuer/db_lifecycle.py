"""Tables of the card lifecycle (``issuer.lifecycle``), on :data:`issuer.db.metadata`.

Migration ``0009_card_lifecycle`` creates exactly these (and the cards index
``uq_cards_one_live_per_subject`` defined next to the ``cards`` table). Invariants the
database holds itself:

- at most one *open* re-issue due per subject (``resolved_at`` null), a partial unique index;
- at most one *open* suspension per card (``lifted_at`` null): a card is suspended by one
  card status event and restored once.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, ForeignKey, Integer, String, Table

from issuer.db import metadata, unique_where

reissue_due = Table(
    "reissue_due",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), ForeignKey("subjects.id"), nullable=False, index=True),
    # The level the new card should show (the card status event's, or the lost card's).
    Column("stars", Integer, nullable=False),
    # Why a new card is due: ``lost``, ``stolen``, or the event's reason (``objection_upheld``).
    Column("reason", String(64), nullable=False),
    # The card revoked or understating its level when the due was recorded (None: no card).
    Column("serial", String(16), ForeignKey("cards.serial")),
    Column("event_id", Integer, ForeignKey("card_status_events.id")),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    # ``issued`` (a new card was activated), ``superseded`` (a later event changed the level),
    # ``entitlement_revoked`` (no longer entitled), ``card_matches`` (the card shows the level).
    Column("resolution", String(32)),
)
unique_where("uq_reissue_due_one_open", reissue_due.c.subject_id, "resolved_at IS NULL")

card_suspensions = Table(
    "card_suspensions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("serial", String(16), ForeignKey("cards.serial"), nullable=False, index=True),
    Column("subject_id", String(32), ForeignKey("subjects.id"), nullable=False),
    Column("event_id", Integer, ForeignKey("card_status_events.id"), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("suspended_at", DateTime(timezone=True), nullable=False),
    Column("lifted_at", DateTime(timezone=True)),
    Column("lifted_by_event_id", Integer, ForeignKey("card_status_events.id")),
)
unique_where("uq_card_suspensions_one_open", card_suspensions.c.serial, "lifted_at IS NULL")

LIFECYCLE_TABLES = (reissue_due, card_suspensions)
