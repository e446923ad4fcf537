"""``make demo``: the main job on the embedded default, start to end, in one process.

SQLite file, ``hsm_sim`` and the virtual card connected in-process (no pcscd needed):
register a person with records, grade, manufacture a ``starcard-v1`` card (its secure-channel
key diversified by the HSM's factory operation), personalize it after mutual authentication,
tap it (valid), revoke it, tap again (invalid), and write the artefacts to the output folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import shutil
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from rich.console import Console
from rich.table import Table

from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import manufacture
from issuer.card_face import render_card_face, save_card_face
from issuer.grading import regrade
from issuer.platform import NewRecord, add_record, record_consent, register_subject
from issuer.publisher import current_token
from issuer.settings import IssuerSettings
from issuer.wiring import build_issuer
from verifier.core.verify import Verdict
from verifier.service import VerifierService
from verifier.tap import read_tap

DEMO_ID_NUMBER = "11010519491231002X"  # the GB 11643 annex example
DEMO_NAME = "张三"

DEMO_RECORDS = (
    NewRecord(
        "volunteering",
        "+",
        "一般",
        "《志愿服务条例》第三十五条",
        "区精神文明建设办公室",
        "区文明办〔2026〕12号",
        dt.date(2026, 3, 5),
        "wenmingban",
    ),
    NewRecord(
        "honour",
        "+",
        "一般",
        "《国家功勋荣誉表彰条例》",
        "区人民政府",
        "区政发〔2026〕31号",
        dt.date(2026, 5, 20),
        "district-gov",
    ),
    NewRecord(
        "blood_donation",
        "+",
        "轻微",
        "《中华人民共和国献血法》第二十二条",
        "区卫生健康局",
        "区卫健〔2026〕88号",
        dt.date(2026, 9, 1),
        "health",
    ),
    NewRecord(
        "admin_penalty",
        "-",
        "一般",
        "《中华人民共和国道路交通安全法》第九十条",
        "区交通警察大队",
        "区公交决字〔2024〕0457号",
        dt.date(2024, 6, 3),
        "traffic",
    ),
)


def _tap(
    console: Console, verifier: VerifierService, session: StarCardSession, now: int
) -> Verdict:
    handle, challenge = verifier.begin("demo-terminal-01", b"merchant:library", now)
    tap = read_tap(session, challenge)
    verdict = verifier.complete(handle, "demo-terminal-01", tap.credential, tap.card_signature, now)
    shown = {"valid": "[bold green]✓ valid[/]", "invalid": "[bold red]✗ not valid[/]"}.get(
        verdict.state, "[bold yellow]? cannot check now[/]"
    )
    stars = "★" * (verdict.star_level or 0)
    console.print(f"  tap ({tap.apdu_count} APDUs): {shown} {stars}")
    return verdict


def run(out: Path, now: dt.datetime, console: Console) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    settings = IssuerSettings(
        database_url=f"sqlite:///{out / 'starcard.db'}",
        hsm_path=out / "hsm-keys.json",
        hsm_passphrase=secrets.token_bytes(32),
        pii_key=secrets.token_bytes(32),
        # this HSM also plays the card factory: it hands out diversified card keys
        card_factory_export=True,
    )
    ctx = build_issuer(settings)
    console.print("[bold]StarCard demo[/] (SQLite, hsm_sim, in-process virtual card)")

    with ctx.engine.begin() as conn:
        subject = register_subject(conn, ctx.vault, DEMO_ID_NUMBER, DEMO_NAME, now, "demo-clerk")
        record_consent(conn, subject, "counter", now, "demo-clerk")
        for record in DEMO_RECORDS:
            add_record(conn, ctx.policy, subject, record, now, "demo-loader")
        grade = regrade(conn, ctx.policy, [subject], now.date(), now)[subject]
    console.print(
        f"  graded {subject} under {ctx.policy.version}: score {grade.score}, "
        f"class {grade.grade_class}, {'★' * grade.stars}"
    )
    table = Table("record", "points", "counts", "why", title="explanation")
    for line in grade.lines:
        table.add_row(
            f"{line.category} {line.document_number}",
            f"{line.points:+d}",
            "yes" if line.counts else "no",
            line.reason,
        )
    console.print(table)

    serial = secrets.token_bytes(8)
    card = manufacture(
        out / "virtual-card.json",
        serial,
        ctx.card_keys.factory_card_key(serial),
        key_version=ctx.card_keys.key_version,
    )
    console.print(
        f"  manufactured card {serial.hex()} (secure-channel key {ctx.card_keys.key_version} "
        "diversified in the HSM)"
    )
    session = StarCardSession(InProcessTransport(card))
    issued = ctx.issuance.personalize(session, subject, now, "demo-clerk")
    console.print(
        f"  personalized card {issued.serial} after mutual authentication "
        f"({len(issued.credential)}-byte credential v{issued.credential_version}, "
        f"{issued.apdu_count} APDUs), access code handed to the holder"
    )

    ts = int(now.timestamp())
    verifier = VerifierService.from_trust_list(ctx.root_public_key, ctx.trust_list, ts)
    with ctx.engine.connect() as conn:
        token = current_token(conn, settings.status_list_id)
    assert token is not None
    verifier.accept_status_list(token, ts)
    first = _tap(console, verifier, session, ts)

    later = now + dt.timedelta(minutes=5)
    ctx.issuance.revoke(issued.serial, "lost", later, "demo-clerk")
    with ctx.engine.connect() as conn:
        revoked_list = current_token(conn, settings.status_list_id)
    assert revoked_list is not None
    verifier.accept_status_list(revoked_list, int(later.timestamp()))
    console.print(f"  card {issued.serial} revoked (reported lost), status list republished")
    second = _tap(console, verifier, session, int(later.timestamp()))

    session.select()
    (out / "credential.cose").write_bytes(session.read_credential())
    (out / "jwks.json").write_text(json.dumps(ctx.keys.jwks(), indent=2) + "\n")
    (out / "trust-list.cbor").write_bytes(ctx.trust_list)
    (out / "root-key.pem").write_bytes(
        ctx.root_public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (out / "status-list.cwt").write_bytes(revoked_list)
    face = render_card_face(
        stars=issued.stars,
        masked_name=DEMO_NAME[0] + "*" * (len(DEMO_NAME) - 1),
        valid_until=issued.expires_at.date(),
        serial=issued.serial,
        citizen_url=settings.citizen_url(issued.qr_token),
    )
    save_card_face(face, out / "card-face.png", out / "card-face.pdf")
    console.print(f"  artefacts in {out}/: " + ", ".join(sorted(p.name for p in out.iterdir())))
    ok = first.state == "valid" and first.star_level == issued.stars and second.state == "invalid"
    console.print("[bold green]demo passed[/]" if ok else "[bold red]demo FAILED[/]")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="starcard-demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    args = parser.parse_args(argv)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    sys.exit(run(args.out, now, Console()))
