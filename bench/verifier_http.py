"""HTTP figures: the 1M-entry status list (size and verifier sync) and verify requests/s.

``status_list_1m_bytes``: a 2-bit StarCard status list of 1,000,000 entries with 1% revoked
at random (seeded), signed as the issuer signs its lists: the token's bytes, beside the size
the Token Status List draft publishes for 1M entries at 1% (Table 1, 1-bit list, "13.7 KB").

``status_list_sync_ms``: that list is stored as list 2 of a running issuer (its real app over
uvicorn); one :meth:`verifier.sync.ListSync.sync_once` into an empty cache (trust list and the
1M list fetched, verified, accepted and written) beside bare ``httpx`` GETs of the same two
resources on the same connection. Median of ``reps``.

``verifier_http_rps``: ``starcard-verifier serve --workers <cores>`` (production settings:
:func:`verifier.cli.server_options`; PostgreSQL scratch database; list sync from the issuer)
and the bare endpoint of :mod:`bench.bare_app` with the same server settings, both loaded by
``wrk`` (same threads, connections, duration, request lines) with :file:`replay.lua`.
Each complete needs a fresh single-use challenge, so the requests are made before the run:
for each one a signed ``POST /v1/challenges`` over HTTP, the in-process virtual card signs
the challenge, and the ``POST /v1/verifications`` is signed by its terminal. wrk replays
each once; **rps counts complete calls that answered ``valid``** (begins are not counted).
If a run uses up its pool, it is repeated with a larger one. The per-terminal rate limit is
set out of the way (it still runs) since the figure is throughput, not the limiter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete, insert

from bench.common import median_of, metric
from bench.grade import postgres_database
from card_profiles.starcard import StarCardSession
from issuer.api import create_app as issuer_app
from issuer.db import status_lists
from issuer.wiring import IssuerContext
from tests.api.test_verifier_sync import served
from tests.helpers import factory_session, graded_subject, id_number
from verifier.core.status_list import StatusList, issue_status_list
from verifier.list_store import ListStore, load_service
from verifier.sync import TRUST_LIST_PATH, ListSync
from verifier.tap import read_tap
from verifier.terminal_auth import TerminalAuth, generate_key, public_key_pem, sign_request

#: Token Status List draft, appendix "Size comparison", Table 1: 1M entries, 1% revoked.
DRAFT_1M_1PCT_BYTES = 13_700
MILLION = 1_000_000
WRK_THREADS = 2
WRK_CONNECTIONS = 32
TERMINALS = 8
BIN = Path(sys.executable).parent


def million_list(ctx: IssuerContext, now: int) -> tuple[bytes, int]:
    """A signed 2-bit list of 1M entries, 1% revoked at random; also the size of the same
    statuses as a 1-bit compressed array (the draft's table case)."""
    rng = random.Random(20261128)
    revoked = rng.sample(range(MILLION), MILLION // 100)
    two, one = StatusList(MILLION, bits=2), StatusList(MILLION, bits=1)
    for idx in revoked:
        two.set(idx, 1)
        one.set(idx, 1)
    uri = ctx.settings.status_list_uri.rsplit("/", 1)[0] + "/2"
    token = issue_status_list(
        two, uri, now, now + 86_400, 300, ctx.keys.status, ctx.keys.status_kid
    )
    return token, len(one.encode())


def store_list(ctx: IssuerContext, list_id: int, token: bytes, now: int) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(delete(status_lists).where(status_lists.c.list_id == list_id))
        conn.execute(
            insert(status_lists).values(
                list_id=list_id, sequence=1, token=token, issued_at=now, expires_at=now + 86_400
            )
        )


def bench_sync(ctx: IssuerContext, base_url: str, work: Path, reps: int) -> dict[str, Any]:
    now = int(time.time())
    runs = iter(range(reps * 2 + 2))

    def synced() -> None:
        cache = work / f"sync-cache-{next(runs)}"
        service = load_service(cache, ctx.root_public_key, now, salvage=True)
        with httpx.Client(timeout=30) as client:
            report = ListSync(
                base_url, [2], ListStore(cache), service, time.time, lambda _: None, client
            ).sync_once(now)
        results = [o.result for o in report.outcomes]
        if results != ["updated", "updated"]:
            raise RuntimeError(f"bench sync did not take the lists: {report.outcomes}")

    def bare() -> None:
        with httpx.Client(timeout=30) as client:
            for path in (TRUST_LIST_PATH, "/s/2"):
                client.get(base_url + path).raise_for_status()

    synced()  # warm both paths the same way
    bare()
    sync_s, bare_s = median_of(reps, synced), median_of(reps, bare)
    return {
        "status_list_sync_ms": metric(
            sync_s * 1e3,
            "ms",
            bare_s * 1e3,
            f"bare httpx GET of the same trust list and 1M-entry list bytes (median of {reps})",
            "lower",
        )
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(args: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[None]:
    """Runs a server process until it answers ``url``; stops it (SIGTERM) afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Pool:
    """Terminals registered with the verifier and one personalized in-process card."""

    def __init__(self, session: StarCardSession, verifier: str, op_token: str) -> None:
        self.verifier = verifier
        self.session = session
        self.keys = {f"bench-{i}": generate_key() for i in range(TERMINALS)}
        with httpx.Client(base_url=verifier, timeout=10) as client:
            for terminal, key in self.keys.items():
                client.post(
                    "/v1/terminals",
                    json={
                        "id": terminal,
                        "merchant_name": "Bench office",
                        "category": "office",
                        "public_key": public_key_pem(key),
                    },
                    headers={"Authorization": f"Bearer {op_token}"},
                ).raise_for_status()
        self.clients = {
            t: httpx.Client(base_url=verifier, timeout=10, auth=TerminalAuth(t, k, time.time))
            for t, k in self.keys.items()
        }

    def line(self, i: int) -> tuple[str, str, bytes]:
        """One signed complete of a fresh tap: (terminal, headers line, body)."""
        terminal = f"bench-{i % TERMINALS}"
        begun = self.clients[terminal].post("/v1/challenges", json={"context": ""})
        begun.raise_for_status()
        handle, challenge = begun.json()["handle"], begun.json()["challenge"]
        data = read_tap(self.session, _b64d(challenge))
        body = json.dumps(
            {
                "handle": handle,
                "credential": _b64e(data.credential),
                "signature": _b64e(data.card_signature),
            },
            separators=(",", ":"),
        ).encode()
        headers = sign_request(
            self.keys[terminal], terminal, "POST", "/v1/verifications", body, int(time.time())
        )
        line = "\t".join(
            [
                terminal,
                headers["X-StarCard-Timestamp"],
                headers["X-StarCard-Signature"],
                body.decode(),
            ]
        )
        return terminal, line, body

    def wait_valid(self, n: int = 20) -> None:
        """Until every worker holds the lists: ``n`` taps in a row answer valid."""
        deadline, ok = time.monotonic() + 60, 0
        while ok < n:
            terminal, _, body = self.line(ok)
            answer = self.clients[terminal].post(
                "/v1/verifications", content=body, headers={"Content-Type": "application/json"}
            )
            ok = ok + 1 if answer.json().get("state") == "valid" else 0
            if ok == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the bench verifier does not answer valid: {answer.text}")
                time.sleep(0.5)

    def write(self, path: Path, n: int) -> None:
        path.write_text("".join(self.line(i)[1] + "\n" for i in range(n)))

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def _b64e(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64d(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_RESULT = re.compile(r"RESULT (\d+) (\d+) (\d+) (\d+) ([\d.]+)")


def wrk(url: str, requests: Path, seconds: int) -> tuple[float, int]:
    """(valid answers per second, other answers) of one wrk run replaying ``requests``."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("verifier_http_rps needs wrk: apt-get install wrk (make setup)")
    script = Path(__file__).with_name("replay.lua")
    out = subprocess.run(
        [
            exe,
            f"-t{WRK_THREADS}",
            f"-c{WRK_CONNECTIONS}",
            f"-d{seconds}s",
            "-s",
            str(script),
            url,
            "--",
            str(requests),
            str(WRK_THREADS),
            "/v1/verifications",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = _RESULT.search(out)
    if found is None:
        raise RuntimeError(f"wrk gave no result: {out}")
    valid, other, duration_us = int(found[1]), int(found[2]), int(found[3])
    return valid / (duration_us / 1e6), other


def bench_rps(ctx: IssuerContext, issuer_url: str, work: Path, quick: bool) -> dict[str, Any]:
    workers = os.cpu_count() or 1
    seconds = 3 if quick else 8
    root = work / "root.pem"
    root.write_bytes(
        ctx.root_public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    trust = work / "trust-list.cbor"
    trust.write_bytes(httpx.get(issuer_url + TRUST_LIST_PATH).content)
    op_token = secrets.token_urlsafe(24)
    # the card (and so list 1 on the issuer) before the verifier's first sync
    session = factory_session(ctx, work / "http-card.json")
    now = dt.datetime.now(dt.UTC)
    subject = graded_subject(ctx, now, id_number=id_number(8888))
    ctx.issuance.personalize(session, subject, now, "bench")
    port, bare_port = free_port(), free_port()
    requests = work / "requests.tsv"
    with postgres_database() as db_url:
        env = dict(os.environ)
        env.update(
            STARCARD_ROOT_KEY=str(root),
            STARCARD_TRUST_LIST=str(trust),
            STARCARD_VERIFIER_DATABASE_URL=db_url,
            STARCARD_VERIFIER_OPERATORS="bench:" + hashlib.sha256(op_token.encode()).hexdigest(),
            STARCARD_VERIFIER_SEAL_KEY=secrets.token_hex(32),
            STARCARD_VERIFIER_RATE_PER_S="1000000",
            STARCARD_VERIFIER_BURST="1000000",
            STARCARD_ISSUER_URL=issuer_url,
            STARCARD_CACHE_DIR=str(work / "verifier-cache"),
            STARCARD_STATUS_LIST_IDS="1",
        )
        serve = [str(BIN / "starcard-verifier"), "serve", "--port", str(port)]
        serve += ["--workers", str(workers)]
        url = f"http://127.0.0.1:{port}"
        with process(serve, env, url + "/healthz", work / "verifier.log"):
            pool = Pool(session, url, op_token)
            try:
                pool.wait_valid()
                size = 600 if quick else 2000
                while True:
                    t0 = time.monotonic()
                    pool.write(requests, size)
                    made_s = time.monotonic() - t0
                    rps, other = wrk(url, requests, seconds)
                    print(
                        f"  verifier: {size} requests made in {made_s:.1f} s, "
                        f"{rps:.0f} valid/s, {other} other",
                        file=sys.stderr,
                    )
                    if other == 0:
                        break
                    # the oldest challenge is about made_s old when wrk sends it (ttl 30 s)
                    if size >= 40_000 or made_s > 25:
                        raise RuntimeError(
                            f"verifier_http_rps: {other} answers were not valid with a pool "
                            f"of {size} (see {work / 'verifier.log'})"
                        )
                    size = math.ceil(rps * seconds * 1.3)
            finally:
                pool.close()
    bare_env = dict(os.environ)
    code = (
        "import uvicorn; from verifier.cli import server_options; "
        f"uvicorn.run('bench.bare_app:app', host='127.0.0.1', port={bare_port}, "
        f"**server_options({workers}))"
    )
    bare_url = f"http://127.0.0.1:{bare_port}"
    with process([sys.executable, "-c", code], bare_env, bare_url + "/docs", work / "bare.log"):
        bare_rps, bare_other = wrk(bare_url, requests, seconds)
    if bare_other:
        raise RuntimeError(f"the bare endpoint answered {bare_other} requests wrongly")
    setting = f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s, {workers} uvicorn workers"
    return {
        "verifier_http_rps": metric(
            rps,
            "req/s",
            bare_rps,
            "bare FastAPI endpoint doing the same two ES256 verifications (cryptography, fixed "
            "data, keys cached) returning constant JSON, same server settings and request "
            f"lines ({setting}); ours counts valid complete calls only, each with a fresh "
            "challenge begun before the run",
            "higher",
        )
    }


def run(ctx: IssuerContext, work: Path, quick: bool) -> dict[str, Any]:
    now = int(time.time())
    token, one_bit = million_list(ctx, now)
    store_list(ctx, 2, token, now)
    results = {
        "status_list_1m_bytes": metric(
            len(token),
            "bytes",
            DRAFT_1M_1PCT_BYTES,
            "Token Status List draft's published size for 1M entries at 1% revoked "
            f"(13.7 KB, 1-bit); ours is the signed 2-bit CWT (same statuses as a 1-bit "
            f"compressed array: {one_bit} bytes)",
            "lower",
        )
    }
    app = issuer_app(ctx.settings, secrets.token_urlsafe(16), context=ctx)
    with served(app) as issuer_url:
        results.update(bench_sync(ctx, issuer_url, work, 3 if quick else 7))
        results.update(bench_rps(ctx, issuer_url, work, quick))
    return results
