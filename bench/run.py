"""``make bench``: measured figures beside baselines measured in the same run.

Writes ``bench/results.json`` in the format of the benchmarks issue:
``{"machine": {...}, "metrics": {NAME: {"value", "unit", "baseline", "baseline_what",
"ratio", "better"}}}``. ``QUICK=1`` runs fewer repetitions.

Sections (names and their metrics: ``bench.common.PLAN``): in-process tap verification;
tap, personalization and batch through pcscd, credential size; APDUs per tap of the other
card profiles; HTTP (``bench/verifier_http.py``: 1M-entry status list size and sync, verify
requests/s with wrk); grading at scale (``bench/grade.py``). Cards are factory-made with the
HSM's factory operation, as in the demo. A full run takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from bench.common import FIXED_METRICS, check_section, machine, median_of, metric
from card_profiles.pcsc import PcscTransport
from card_profiles.starcard import StarCardSession
from issuer.publisher import current_token
from issuer.settings import IssuerSettings
from issuer.wiring import IssuerContext, build_issuer
from tests.helpers import factory_card_state, factory_session, graded_subject, id_number
from tests.pcsc_harness import CardProcess, PcscStack
from verifier.core.challenge import begin, challenge_bytes
from verifier.core.status_list import StatusListCache
from verifier.core.verify import decide
from verifier.service import VerifierService
from verifier.tap import read_tap

EU_DCC_MEDIAN_BYTES = 367


def bench_pcsc(ctx: IssuerContext, work: Path, taps: int, cards: int) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    ts = int(now.timestamp())
    results: dict[str, Any] = {}
    with PcscStack(work / "pcscd"):
        personalize_s, apdus = [], 0
        card = None
        for i in range(cards):
            if card is not None:
                card.stop()
            state = factory_card_state(ctx, work / f"card-{i}.json")
            card = CardProcess(state).start()
            subject = graded_subject(ctx, now, id_number=id_number(i))
            with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
                t0 = time.perf_counter()
                issued = ctx.issuance.personalize(StarCardSession(transport), subject, now, "b")
                personalize_s.append(time.perf_counter() - t0)
                apdus = issued.apdu_count
        assert card is not None
        verifier = VerifierService(trust=ctx.keys.trust_store())
        with ctx.engine.connect() as conn:
            token = current_token(conn, 1)
        assert token is not None
        verifier.accept_status_list(token, ts)
        with PcscTransport.connect(card.reader, timeout_s=5.0) as transport:
            session = StarCardSession(transport)
            counts = []

            def one_tap() -> None:
                handle, challenge = verifier.begin("bench", b"bench", ts)
                data = read_tap(session, challenge)
                verdict = verifier.complete(
                    handle, "bench", data.credential, data.card_signature, ts
                )
                if verdict.state != "valid":
                    raise RuntimeError(f"bench tap was {verdict}")
                counts.append(data.apdu_count)

            tap_s = median_of(taps, one_tap)

            def three_selects() -> None:
                for _ in range(3):
                    session.select()

            bare_s = median_of(taps, three_selects)
        card.stop()
    results["tap_pcsc_ms"] = metric(
        tap_s * 1e3,
        "ms",
        bare_s * 1e3,
        "3 bare SELECT APDUs to the same card through pcscd",
        "lower",
    )
    results["tap_apdu_count"] = metric(max(counts), "APDUs", 3, "the 3-APDU budget", "lower")
    results["personalize_ms"] = metric(
        statistics.median(personalize_s) * 1e3,
        "ms",
        tap_s * 1e3,
        "one full tap through pcscd (same run)",
        "lower",
    )
    results["personalize_apdu_count"] = metric(apdus, "APDUs", 3, "a tap's 3 APDUs", "lower")
    per_card = statistics.mean(personalize_s)
    results["batch_1000_cards_s"] = metric(
        1000 * per_card,
        "s",
        1000 * apdus * bare_s / 3,
        f"1000 x {apdus} bare SELECT APDUs through pcscd (same card, same run); ours is "
        f"1000 x the mean of {cards} personalizations through pcscd (Issuance.personalize, "
        "secure channel, HSM signing, database), card changes not included",
        "lower",
    )
    results["credential_bytes"] = metric(
        len(issued.credential), "bytes", EU_DCC_MEDIAN_BYTES, "EU DCC median size", "lower"
    )
    return results


def bench_inprocess(ctx: IssuerContext, work: Path, n: int) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    ts = int(now.timestamp())
    subject = graded_subject(ctx, now, id_number=id_number(9999))
    session = factory_session(ctx, work / "inproc.json")
    ctx.issuance.personalize(session, subject, now, "b")
    trust = ctx.keys.trust_store()
    cache = StatusListCache()
    with ctx.engine.connect() as conn:
        token = current_token(conn, 1)
    assert token is not None
    cache.accept(token, trust, ts)
    state = begin("bench", b"bench", ts)
    data = read_tap(session, challenge_bytes(state))

    def verify() -> None:
        verdict = decide(data.credential, data.card_signature, state, trust, cache, ts)
        if verdict.state != "valid":
            raise RuntimeError(str(verdict))

    tap_s = median_of(n, verify)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
    msg = secrets.token_bytes(200)
    sigs = [k.sign(msg, ec.ECDSA(hashes.SHA256())) for k in keys]
    pubs = [k.public_key() for k in keys]

    def two_verifications() -> None:
        for pub, sig in zip(pubs, sigs, strict=True):
            pub.verify(sig, msg, ec.ECDSA(hashes.SHA256()))

    base_s = median_of(n, two_verifications)
    return {
        "tap_verify_inprocess_us": metric(
            tap_s * 1e6, "us", base_s * 1e6, "two bare ES256 verifications (cryptography)", "lower"
        )
    }


def bench_profiles(credential: bytes) -> dict[str, Any]:
    """APDUs per tap for the other profiles, in-process (the counts are the same via pcscd)."""
    from card_profiles.transport import InProcessTransport
    from card_profiles.virtual.piv_card import PIV_ATR, VirtualPivCard
    from tests.unit.test_iso7816_fs import personalized
    from tests.unit.test_piv import personalize
    from verifier.tap import tap_card

    challenge = bytes(32)
    piv = VirtualPivCard(extended_length=True)
    personalize(piv, credential)
    piv.reset()
    piv_tap = tap_card(InProcessTransport(piv), PIV_ATR, challenge)
    iso_tap = tap_card(InProcessTransport(personalized(credential)), b"", challenge)
    budget = "the 3-APDU tap budget"
    return {
        "tap_apdu_count_piv": metric(piv_tap.apdu_count, "APDUs", 3, budget, "lower"),
        "tap_apdu_count_iso7816_fs": metric(iso_tap.apdu_count, "APDUs", 3, budget, "lower"),
    }


def main() -> None:
    quick = os.environ.get("QUICK") == "1"
    out = Path(__file__).resolve().parent / "results.json"
    from bench import verifier_http
    from bench.grade import run as run_grading

    metrics: dict[str, Any] = {}

    def section(name: str, produced: dict[str, Any]) -> None:
        check_section(name, produced)
        metrics.update(produced)
        print(f"bench: {name} done", file=sys.stderr)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="starcard-bench-") as tmp:
        work = Path(tmp)
        settings = IssuerSettings(
            database_url=f"sqlite:///{work / 'bench.db'}",
            hsm_path=None,
            hsm_passphrase=secrets.token_bytes(16),
            pii_key=secrets.token_bytes(32),
            # this HSM also plays the card factory: it hands out diversified card keys
            card_factory_export=True,
        )
        ctx = build_issuer(settings)
        section("inprocess", bench_inprocess(ctx, work, 300 if quick else 2000))
        section("pcsc", bench_pcsc(ctx, work, 100 if quick else 200, 3 if quick else 20))
        section("profiles", bench_profiles(bytes(metrics["credential_bytes"]["value"])))
        section("http", verifier_http.run(ctx, work, quick))
    section("grading", run_grading(quick))
    missing = [name for name in FIXED_METRICS if name not in metrics]
    if missing:
        raise RuntimeError(f"bench run is missing {missing}")
    info = machine()
    info["loadavg_at_start"] = [round(x, 2) for x in load_before]
    result = {"machine": info, "quick": quick, "metrics": metrics}
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    for name, m in metrics.items():
        print(
            f"{name:28} {m['value']:>12} {m['unit']:6} baseline {m['baseline']:>10} "
            f"({m['baseline_what']})",
            file=sys.stdout,
        )


if __name__ == "__main__":
    main()
