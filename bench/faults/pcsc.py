"""Card faults through a real pcscd (tests/pcsc_harness.py): the card pulled after every APDU
of personalization, then re-inserted (the helpers of tests/e2e/test_card_pulled.py), and
pcscd restarted in the middle of a session. Skipped, and said so, without a PC/SC stack."""

from __future__ import annotations

from pathlib import Path

from card_profiles.errors import CardError
from card_profiles.pcsc import PcscTransport, wait_for_card
from card_profiles.starcard import StarCardSession
from tests.conftest import NOW
from tests.e2e.test_card_pulled import (
    PERSONALIZATION_APDUS,
    card_states,
    lose_power,
    personalize,
    tap,
)
from tests.helpers import factory_card_state, graded_subject, id_number
from tests.pcsc_harness import CardProcess, PcscStack, pcsc_available

from .core import Category, Probe
from .world import check_one_card, issuer


def run_pcsc(category: Category, work: Path, quick: bool) -> None:
    missing = pcsc_available()
    if missing is not None:
        category.tally.findings.append(f"pcsc scenarios skipped: {missing}")
        return
    with issuer(work) as ctx, PcscStack(work / "pcscd") as stack:
        for after in range(0, PERSONALIZATION_APDUS, 4 if quick else 1):

            def pulled(probe: Probe, after: int = after) -> None:
                path = factory_card_state(ctx, work / f"card-{after}.json")
                subject = graded_subject(ctx, NOW, id_number=id_number(500 + after))
                torn = CardProcess(path, power_loss_after=after).start()
                probe.fault()
                try:
                    try:
                        personalize(ctx, torn, subject)
                        probe.bad("errors", "personalization survived the pulled card")
                    except CardError:
                        pass
                    lose_power(torn)
                finally:
                    torn.stop()
                probe.expect("active" not in card_states(ctx, subject), "inconsistent_states",
                             "an active record for a card pulled mid-personalization")  # fmt: skip
                again = CardProcess(path).start()
                try:
                    personalize(ctx, again, subject)
                    probe.expect(card_states(ctx, subject) == ["active"], "inconsistent_states",
                                 f"after re-run: {card_states(ctx, subject)}")  # fmt: skip
                    check_one_card(probe, ctx, subject)
                    state = tap(ctx, again)
                    probe.expect(state == "valid", "inconsistent_states", f"re-run taps {state}")
                finally:
                    again.stop()

            category.run(f"pcsc_pulled_after_apdu_{after}", pulled, timeout_s=90)

        def restarted(probe: Probe) -> None:
            path = factory_card_state(ctx, work / "restart.json")
            card = CardProcess(path).start()
            transport = PcscTransport.connect(card.reader, timeout_s=5.0)
            try:
                session = StarCardSession(transport)
                session.select()
                probe.fault()
                stack.restart()
                try:
                    session.select()
                    probe.bad("errors", "a session survived a pcscd restart")
                except CardError:
                    pass
            finally:
                transport.close()
                card.stop()
            again = CardProcess(path).start()
            try:
                wait_for_card(again.reader, 10.0)
                with PcscTransport.connect(again.reader, timeout_s=5.0) as fresh:
                    subject = graded_subject(ctx, NOW, id_number=id_number(600))
                    ctx.issuance.personalize(StarCardSession(fresh), subject, NOW, "f")
                state = tap(ctx, again)
                probe.expect(state == "valid", "inconsistent_states", f"after restart: {state}")
            finally:
                again.stop()

        category.run("pcscd_restarted_mid_session", restarted, timeout_s=90)
