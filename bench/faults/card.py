"""Card faults: pulled after every APDU of personalization and of a tap, response lost (the
command's writes done, the answer never arrives), another card put in after an interruption,
and, through a real pcscd, the card pulled mid-personalization and pcscd restarted."""

from __future__ import annotations

from pathlib import Path

from card_profiles.errors import CardError
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import VirtualStarCard
from issuer.issuance import IssuanceError
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_card, graded_subject, id_number

from .core import Category, Probe
from .world import check_one_card, issuer, states, tap_state

PERSONALIZATION_APDUS = 15
TAP_APDUS = 3


class Subjects:
    """Distinct people for the scenarios of one issuer."""

    def __init__(self, ctx: IssuerContext, start: int = 0) -> None:
        self.ctx = ctx
        self.n = start

    def next(self) -> str:
        self.n += 1
        return graded_subject(self.ctx, NOW, id_number=id_number(self.n))


def personalize(ctx: IssuerContext, card: VirtualStarCard, subject: str) -> str:
    """``"ok"``, or the kind of error personalization ended with."""
    card.reset()
    try:
        ctx.issuance.personalize(StarCardSession(InProcessTransport(card)), subject, NOW, "f")
    except CardError:
        return "card error"
    except IssuanceError as exc:
        return f"refused: {exc}"
    return "ok"


def interrupted(
    probe: Probe, ctx: IssuerContext, subject: str, path: Path, after: int, commits: int
) -> VirtualStarCard:
    """Personalization torn during APDU ``after + 1`` (after ``commits`` EEPROM writes)."""
    card = factory_card(ctx, path, power_loss_after=after, power_loss_commits=commits)
    probe.fault()
    first = personalize(ctx, card, subject)
    probe.expect(first == "card error", "errors", f"torn personalization ended {first!r}")
    check_one_card(probe, ctx, subject)
    active = "active" in states(ctx, subject).values()
    probe.verdict(tap_state(ctx, card), "a card torn mid-personalization", may_be_valid=active)
    return card


def rerun_completes(probe: Probe, ctx: IssuerContext, card: VirtualStarCard, subject: str) -> None:
    again = personalize(ctx, card, subject)
    done = again == "ok" or "already issued (active)" in again
    probe.expect(done, "inconsistent_states", f"re-run on the same card ended {again!r}")
    probe.expect(
        list(states(ctx, subject).values()) == ["active"],
        "inconsistent_states",
        f"after the re-run: {states(ctx, subject)}",
    )
    check_one_card(probe, ctx, subject)
    state = tap_state(ctx, card)
    probe.expect(state == "valid", "inconsistent_states", f"re-run card taps {state}")


def run(work: Path, quick: bool) -> Category:
    category = Category("card")
    with issuer(work / "card") as ctx:
        people = Subjects(ctx)
        steps = range(0, PERSONALIZATION_APDUS, 3 if quick else 1)
        for after in steps:
            for kind, commits in (("pulled", 0), ("response_lost", 1_000)):

                def torn(
                    probe: Probe, after: int = after, commits: int = commits, kind: str = kind
                ) -> None:
                    subject = people.next()
                    path = work / "card" / f"{kind}-{after}.json"
                    card = interrupted(probe, ctx, subject, path, after, commits)
                    rerun_completes(probe, ctx, card, subject)

                category.run(f"personalization_{kind}_after_apdu_{after}", torn)

        for after in (2, 8) if quick else steps:

            def swapped(probe: Probe, after: int = after) -> None:
                subject = people.next()
                first = interrupted(
                    probe, ctx, subject, work / "card" / f"a-{after}.json", after, 0
                )
                other = factory_card(ctx, work / "card" / f"b-{after}.json")
                probe.fault()
                outcome = personalize(ctx, other, subject)
                check_one_card(probe, ctx, subject)
                verdicts = (tap_state(ctx, first), tap_state(ctx, other))
                probe.expect(
                    verdicts.count("valid") <= 1, "double_active_cards", f"both tap {verdicts}"
                )
                probe.verdict(verdicts[0], "the interrupted card after the swap", may_be_valid=True)
                if outcome != "ok":  # refused: the first card is still the one to finish
                    rerun_completes(probe, ctx, first, subject)

            category.run(f"card_swapped_after_apdu_{after}", swapped)

        def tap_pulled(probe: Probe) -> None:
            subject = people.next()
            path = work / "card" / "tapped.json"
            card = factory_card(ctx, path)
            probe.expect(personalize(ctx, card, subject) == "ok", "errors", "personalize")
            for after in range(TAP_APDUS):
                torn = VirtualStarCard(path, power_loss_after=after)
                probe.fault()
                state = tap_state(ctx, torn)
                probe.verdict(state, f"a tap torn after APDU {after}")
            probe.expect(tap_state(ctx, card) == "valid", "inconsistent_states", "tap after")

        category.run("tap_pulled_after_every_apdu", tap_pulled)
    from .pcsc import run_pcsc

    run_pcsc(category, work / "pcsc", quick)
    return category
