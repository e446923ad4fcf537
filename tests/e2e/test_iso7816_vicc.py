"""The ``iso7816-fs`` profiles against an independent card: vsmartcard's ``vicc -t iso7816``.

pyscard → pcscd → vpcd (slot 1, port 35964) → vicc, the ISO 7816-4 file-system card of the
vsmartcard project, run from the Debian package ``vsmartcard-vpicc``. Known quirks of that
package (docs/card-iso7816-fs.md, research/pcsc-notes.md §3): it needs
``PYTHONPATH=/usr/lib/python3/site-packages/virtualsmartcard`` and pycryptodome, so it runs
with this venv's interpreter; SELECT must use P2=0C and UPDATE BINARY must carry Le, or the
card process dies.

Each test starts its own vicc (a blank card), personalizes it with Iso7816FsSession, taps
it on a fresh connection, and compares every APDU and answer with the golden transcripts
that tests/unit/test_iso7816_fs.py records against the in-memory fake card.

Missing pcscd/vpcd/pyscard or vicc: skipped locally, a failure under ``CI=true``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from card_profiles.errors import CardTimeout
from card_profiles.iso7816_fs import ISO7816_FS, ISO7816_FS_MF, Iso7816FsProfile, Iso7816FsSession
from card_profiles.pcsc import PcscTransport, wait_for_card, wait_for_card_absent
from card_profiles.scripted import RecordingTransport, load_transcript
from issuer.publisher import current_token
from issuer.wiring import IssuerContext
from tests.helpers import write_trust_files
from tests.pcsc_harness import READER_BY_PORT, PcscStack, skip_or_fail
from verifier.core.credential import CredentialClaims, issue_credential, qr_token_binding
from verifier.terminal import app as terminal_app

VICC = Path("/usr/bin/vicc")
VICC_PYTHONPATH = Path("/usr/lib/python3/site-packages/virtualsmartcard")
VICC_PORT = 35964
READER = READER_BY_PORT[VICC_PORT]
TRANSCRIPTS = Path(__file__).resolve().parents[1] / "vectors" / "transcripts"
START_TIMEOUT_S = 20.0
VICC_ATR = bytes.fromhex("3B951381018073FF01000B")
"""vicc 0.8 ``-t iso7816``: T=1, historical bytes with its software function tables."""


def vicc_missing() -> str | None:
    """None if vicc can run here (script, its Python package, pycryptodome); else why not."""
    if not VICC.is_file():
        return f"{VICC} missing (apt-get install vsmartcard-vpicc)"
    if not (VICC_PYTHONPATH / "virtualsmartcard" / "VirtualSmartcard.py").is_file():
        return f"virtualsmartcard package missing under {VICC_PYTHONPATH}"
    try:
        import Crypto  # noqa: F401  (pycryptodome, which vicc needs and Debian omits)
    except ImportError:
        return "pycryptodome is not installed in this environment (vicc needs it)"
    return None


def require_vicc() -> None:
    """Skip if vicc cannot run, or fail under CI=true (like require_pcsc)."""
    reason = vicc_missing()
    if reason is not None:
        skip_or_fail(f"vicc: {reason}")


pytestmark = [
    pytest.mark.pcsc,
    # Locally, do not even start pcscd when vicc is missing; under CI the fixture fails.
    pytest.mark.skipif(
        vicc_missing() is not None and os.environ.get("CI") != "true",
        reason=f"vicc unavailable: {vicc_missing()}",
    ),
]


def golden_credential(size: int = 300, seed: bytes = b"iso7816-fs golden credential") -> bytes:
    """The credential of the golden transcripts (same as in tests/unit/test_iso7816_fs.py)."""
    out = b"".join(
        hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(size // 32 + 1)
    )
    return out[:size]


class ViccProcess:
    """``vicc -t iso7816`` plugged into the vpcd slot of ``port``, in its own process."""

    def __init__(self, log_path: Path, port: int = VICC_PORT) -> None:
        self.port = port
        self.reader = READER_BY_PORT[port]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ViccProcess:
        """Start vicc and wait until pcscd shows its card. Raises RuntimeError."""
        try:
            wait_for_card_absent(self.reader, timeout_s)
        except CardTimeout:
            raise RuntimeError(f"{self.reader!r} still holds another card") from None
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(VICC_PYTHONPATH), env.get("PYTHONPATH", "")) if p
        )
        command = [
            sys.executable, str(VICC), "-t", "iso7816",
            "-H", "127.0.0.1", "-P", str(self.port), "-vv",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise RuntimeError(f"vicc exited with {self.returncode}:\n{self.log_text()}")
            try:
                wait_for_card(self.reader, 0.25)
                return self
            except CardTimeout:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"vicc card not seen in {self.reader!r}") from None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate (kill after 5 s), reap, and wait until the reader is empty."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.returncode = self.proc.wait()
        self.proc = None
        wait_for_card_absent(self.reader, timeout_s)

    def log_text(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-60:])
        except OSError:
            return "(no log)"


@pytest.fixture
def vicc(pcsc_stack: PcscStack, tmp_path: Path) -> Iterator[ViccProcess]:
    """A blank vicc ISO 7816 card in "Virtual PCD 00 01"; removed again after the test."""
    require_vicc()
    card = ViccProcess(tmp_path / "vicc.log")
    card.start()
    try:
        yield card
    finally:
        card.stop()


@pytest.mark.parametrize(
    ("profile", "prefix"),
    [(ISO7816_FS, "iso7816_fs"), (ISO7816_FS_MF, "iso7816_fs_mf")],
    ids=["df-sfi", "mf-path"],
)
def test_vicc_personalize_then_tap_matches_the_golden_transcripts(
    vicc: ViccProcess, profile: Iso7816FsProfile, prefix: str
) -> None:
    credential = golden_credential(300)
    with PcscTransport.connect(vicc.reader, timeout_s=10.0, exclusive=True) as pcsc:
        assert pcsc.atr == VICC_ATR, "not vicc's ISO 7816 card in the reader"
        writer = RecordingTransport(pcsc)
        Iso7816FsSession(writer, profile).write_credential(credential)
    assert vicc.running, f"vicc died during personalization:\n{vicc.log_text()}"

    # A new connection resets the card (PcscTransport.close uses SCARD_RESET_CARD).
    with PcscTransport.connect(vicc.reader, timeout_s=10.0) as pcsc:
        reader = RecordingTransport(pcsc)
        session = Iso7816FsSession(reader, profile)
        started = time.perf_counter()
        session.select()
        assert session.read_credential() == credential
        tap_s = time.perf_counter() - started
    assert session.apdu_count == 3, "a tap of a 300-byte credential is SELECT + 2 READ BINARY"
    assert vicc.running, f"vicc died during the tap:\n{vicc.log_text()}"
    print(f"\n{profile.name}: tap of 3 APDUs through vicc took {tap_s * 1000:.1f} ms")

    # vicc (an independent implementation) answers exactly like the fake card of the unit
    # tests: same commands, same data, same status words (6282 to UPDATE BINARY with Le).
    golden = load_transcript(TRANSCRIPTS / f"{prefix}_personalize.json")
    assert list(writer.exchanges) + list(reader.exchanges) == golden
    assert list(reader.exchanges) == load_transcript(TRANSCRIPTS / f"{prefix}_tap.json")

    vicc.stop()
    wait_for_card_absent(READER, 5.0)


def test_vicc_card_taps_as_low_assurance_and_policy_decides(
    vicc: ViccProcess, sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    """An independent ISO 7816 card holding a real keyless credential, tapped through pcscd."""
    now = int(time.time())
    claims = CredentialClaims(
        iss=sqlite_issuer.settings.issuer_id,
        iat=now,
        nbf=now,
        exp=now + 86_400,
        cti=bytes.fromhex("0102030405060708"),
        card_key=None,
        status_idx=77,
        status_uri=sqlite_issuer.settings.status_list_uri,
        star_level=2,
        policy_version=sqlite_issuer.policy.version,
        profile="iso7816-fs",
        qr_hash=qr_token_binding("printed-token"),
    )
    keys = sqlite_issuer.keys
    credential = issue_credential(claims, keys.credential, keys.credential_kid)
    with PcscTransport.connect(vicc.reader, timeout_s=10.0) as transport:
        Iso7816FsSession(transport, ISO7816_FS).write_credential(credential)
    sqlite_issuer.issuance.publish_now(dt.datetime.fromtimestamp(now, dt.UTC))
    root, trust_list = write_trust_files(sqlite_issuer, tmp_path)
    status = tmp_path / "status.cwt"
    with sqlite_issuer.engine.connect() as conn:
        token = current_token(conn, sqlite_issuer.settings.status_list_id)
    assert token is not None
    status.write_bytes(token)
    args = ["tap", "--reader", vicc.reader, "--offline", "--root", str(root)]
    args += ["--trust-list", str(trust_list), "--status-list", str(status)]
    refused = CliRunner().invoke(terminal_app, args)
    assert refused.exit_code == 0, refused.output
    assert "✗ not valid" in refused.output
    accepted = CliRunner().invoke(terminal_app, [*args, "--accept-low-assurance"])
    assert accepted.exit_code == 0, accepted.output
    assert "✓ valid ★★" in accepted.output
    assert "no clone protection" in accepted.output
