"""The virtual PIV card through the real stack, read by OpenSC as an independent client.

pyscard/OpenSC → pcscd → vpcd → ``python -m card_profiles.virtual.piv_card``. OpenSC's own
tools must recognise and read the card the way they read any PIV card: ``opensc-tool``
(ATR, card type), ``piv-tool`` (serial from the CHUID, management-key mutual
authentication), ``pkcs15-tool`` (CHUID, certificate and public key of the card
authentication key 9E) and OpenSC's PKCS#11 module (a signature with 9E that we verify).
Our own :class:`PivSession` over :class:`PcscTransport` personalizes, taps in at most 3
APDUs (4 on a short-only card) and gets a typed PinBlocked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID

from card_profiles.errors import CardTimeout
from card_profiles.pcsc import PcscTransport, wait_for_card, wait_for_card_absent
from card_profiles.piv import (
    AesManagementKey,
    ObjectTag,
    PinBlocked,
    PinStatus,
    PivSession,
    WrongPin,
)
from card_profiles.virtual.piv_card import DEFAULT_MANAGEMENT_KEY, PIV_ATR, PIV_ATR_SHORT_ONLY
from tests.pcsc_harness import READER_BY_PORT, REPO_ROOT, PcscStack

pytestmark = pytest.mark.pcsc

PORT = 35963
READER = READER_BY_PORT[PORT]
ADMIN = AesManagementKey(DEFAULT_MANAGEMENT_KEY)
TOOL_TIMEOUT_S = 60.0
START_TIMEOUT_S = 20.0
PKCS11_MODULES = (
    "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/opensc-pkcs11.so",
)
NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)


class PivCardProcess:
    """A virtual PIV card in its own process, inserted into the vpcd reader of ``port``."""

    def __init__(self, state_path: Path, *, short_only: bool, port: int = PORT) -> None:
        self.state_path = state_path
        self.short_only = short_only
        self.port = port
        self.reader = READER_BY_PORT[port]
        self.log_path = state_path.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PivCardProcess:
        """Start the card and wait until pcscd reports it. Raises RuntimeError."""
        try:
            wait_for_card_absent(self.reader, START_TIMEOUT_S)
        except CardTimeout:
            raise RuntimeError(f"{self.reader!r} still holds another card") from None
        command = [
            sys.executable, "-m", "card_profiles.virtual.piv_card",
            "--port", str(self.port), "--state", str(self.state_path),
            "--wait", str(START_TIMEOUT_S),
        ] + (["--short-only"] if self.short_only else [])  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"card exited with {self.proc.returncode}: {self.log()}")
            try:
                wait_for_card(self.reader, 0.25)
                return self
            except CardTimeout:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"card not seen in {self.reader!r}") from None

    def stop(self) -> None:
        """Remove the card: SIGTERM (SIGKILL after 5 s), reap, wait for an empty reader."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        self.proc = None
        wait_for_card_absent(self.reader, 10.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


CardFactory = Callable[..., PivCardProcess]


@pytest.fixture
def piv_card(pcsc_stack: PcscStack, tmp_path: Path) -> Iterator[CardFactory]:
    """Factory ``piv_card(short_only=False, state_path=None)``; every card is removed after."""
    for tool in ("opensc-tool", "piv-tool", "pkcs15-tool"):
        if shutil.which(tool) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{tool} required under CI (apt-get install opensc)")
            pytest.skip(f"{tool} is not installed (apt-get install opensc)")
    started: list[PivCardProcess] = []

    def make(short_only: bool = False, state_path: Path | None = None) -> PivCardProcess:
        path = state_path or tmp_path / f"piv-{len(started)}.json"
        card = PivCardProcess(path, short_only=short_only)
        started.append(card)
        return card.start()

    yield make
    for card in reversed(started):
        card.stop()


@pytest.fixture
def opensc_env(tmp_path: Path) -> dict[str, str]:
    """Environment for OpenSC tools: a private opensc.conf without file caching."""
    conf = tmp_path / "opensc.conf"
    conf.write_text("app default {\n  framework pkcs15 {\n    use_file_caching = no;\n  }\n}\n")
    return dict(os.environ, OPENSC_CONF=str(conf))


def run(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    """Run an OpenSC tool with a timeout; the result's returncode is checked by the caller."""
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, env=env, check=False
    )


def opensc_atr(env: dict[str, str], reader: str) -> bytes:
    result = run(env, "opensc-tool", "-r", reader, "--atr")
    assert result.returncode == 0, result.stderr
    return bytes.fromhex(result.stdout.strip().replace(":", ""))


def card_certificate(point: bytes) -> x509.Certificate:
    """An X.509 certificate for the card key, issued by a throw-away test CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "StarCard test issuer")])
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "StarCard PIV card")])
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(usage, critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def personalize(reader: str, atr: bytes, credential: bytes) -> tuple[bytes, x509.Certificate]:
    """Station side: key in 9E, credential object, card authentication certificate."""
    with PcscTransport.connect(reader, timeout_s=5.0) as transport:
        session = PivSession(transport, atr=atr)
        session.select()
        session.authenticate_management_key(ADMIN)
        point = session.generate_card_key()
        session.write_credential(credential)
        certificate = card_certificate(point)
        der = certificate.public_bytes(serialization.Encoding.DER)
        session.write_certificate(ObjectTag.CARD_AUTH_CERTIFICATE, der)
    return point, certificate


def verify(point: bytes, message: bytes, signature: bytes) -> None:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.verify(utils.encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))


def tap(reader: str, atr: bytes) -> tuple[bytes, bytes, bytes, int]:
    """Terminal side: (credential, challenge, signature, APDUs used)."""
    challenge = os.urandom(32)
    with PcscTransport.connect(reader, timeout_s=5.0) as transport:
        session = PivSession(transport, atr=atr)
        session.select()
        credential = session.read_credential()
        signature = session.internal_authenticate(challenge)
        return credential, challenge, signature, session.apdu_count


@pytest.mark.parametrize(("short_only", "tap_apdus"), [(False, 3), (True, 4)])
def test_personalize_and_tap_through_pcscd(
    piv_card: CardFactory, opensc_env: dict[str, str], short_only: bool, tap_apdus: int
) -> None:
    card = piv_card(short_only=short_only)
    atr = opensc_atr(opensc_env, card.reader)
    assert atr == (PIV_ATR_SHORT_ONLY if short_only else PIV_ATR)
    credential = os.urandom(300)
    point, _ = personalize(card.reader, atr, credential)
    read, challenge, signature, apdus = tap(card.reader, atr)
    assert read == credential
    verify(point, challenge, signature)
    assert apdus == tap_apdus

    card.stop()  # out of the reader; the state file is its memory
    again = piv_card(short_only=short_only, state_path=card.state_path)
    read, challenge, signature, _ = tap(again.reader, atr)
    assert read == credential
    verify(point, challenge, signature)


@pytest.mark.parametrize("short_only", [False, True])
def test_opensc_tools_read_it_as_a_piv_card(
    piv_card: CardFactory, opensc_env: dict[str, str], short_only: bool
) -> None:
    card = piv_card(short_only=short_only)
    reader = card.reader
    name = run(opensc_env, "opensc-tool", "-r", reader, "--name")
    assert name.returncode == 0, name.stderr
    assert name.stdout.strip() == "Personal Identity Verification Card"

    atr = opensc_atr(opensc_env, reader)
    point, certificate = personalize(reader, atr, os.urandom(300))
    with PcscTransport.connect(reader) as transport:
        session = PivSession(transport, atr=atr)
        session.select()
        chuid = session.read_chuid()

    serial = run(opensc_env, "piv-tool", "-r", reader, "--serial")
    assert serial.returncode == 0, serial.stderr
    assert serial.stdout.split()[:16] == [f"{b:02X}" for b in chuid.guid]

    dump = run(opensc_env, "pkcs15-tool", "-r", reader, "--dump")
    assert dump.returncode == 0, dump.stderr
    text = dump.stdout
    assert "PKCS#15 Card [StarCard PIV card]" in text  # token label = CN of the first cert
    assert f"Serial number  : {chuid.guid.hex()}" in text
    assert "Data object 'Card Holder Unique Identifier'" in text
    assert chuid.fasc_n.hex().upper() in text.replace("\n", "").replace(" ", "")
    assert "X.509 Certificate [Certificate for Card Authentication]" in text
    assert "Private EC Key [CARD AUTH key]" in text
    assert "Public EC Key [CARD AUTH pubkey]" in text

    public = run(opensc_env, "pkcs15-tool", "-r", reader, "--read-public-key", "04")
    assert public.returncode == 0, public.stderr
    key = serialization.load_pem_public_key(public.stdout.encode())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert (
        key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        == point
    )
    cert = run(opensc_env, "pkcs15-tool", "-r", reader, "--read-certificate", "04")
    assert cert.returncode == 0, cert.stderr
    assert x509.load_pem_x509_certificate(cert.stdout.encode()) == certificate


def test_opensc_pkcs11_signs_with_the_card_authentication_key(
    piv_card: CardFactory, opensc_env: dict[str, str], tmp_path: Path
) -> None:
    module = next((m for m in PKCS11_MODULES if Path(m).is_file()), None)
    if module is None or shutil.which("pkcs11-tool") is None:
        pytest.skip("OpenSC PKCS#11 module or pkcs11-tool not installed")
    card = piv_card()
    point, _ = personalize(card.reader, opensc_atr(opensc_env, card.reader), b"credential")
    message = os.urandom(64)
    digest = tmp_path / "digest.bin"
    digest.write_bytes(hashlib.sha256(message).digest())
    signature = tmp_path / "signature.bin"
    # pkcs11-tool logs in because the token is "login required"; 9E itself needs no PIN.
    result = run(
        opensc_env,
        "pkcs11-tool", "--module", module, "--slot-index", "0", "--pin", "123456",
        "--id", "04", "--sign", "--mechanism", "ECDSA",
        "--input-file", str(digest), "--output-file", str(signature),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    verify(point, message, signature.read_bytes())


def test_opensc_authenticates_with_our_management_key(
    piv_card: CardFactory, opensc_env: dict[str, str], tmp_path: Path
) -> None:
    """OpenSC's own witness/challenge implementation (``piv-tool -A M:9B:08``)."""
    card = piv_card()
    right, wrong = tmp_path / "right.key", tmp_path / "wrong.key"
    right.write_text(DEFAULT_MANAGEMENT_KEY.hex(":"))
    wrong.write_text(bytes(16).hex(":"))
    ok = run(
        dict(opensc_env, PIV_EXT_AUTH_KEY=str(right)),
        "piv-tool",
        "-r",
        card.reader,
        "-A",
        "M:9B:08",
    )
    assert ok.returncode == 0, ok.stderr
    refused = run(
        dict(opensc_env, PIV_EXT_AUTH_KEY=str(wrong)),
        "piv-tool",
        "-r",
        card.reader,
        "-A",
        "M:9B:08",
    )
    assert refused.returncode != 0
    assert "admin_mode failed" in refused.stderr


def test_pin_blocked_after_three_wrong_tries(
    piv_card: CardFactory, opensc_env: dict[str, str]
) -> None:
    card = piv_card()
    with PcscTransport.connect(card.reader) as transport:
        session = PivSession(transport, atr=PIV_ATR)
        session.select()
        retries = []
        for _ in range(2):
            with pytest.raises(WrongPin) as wrong:
                session.verify_pin("000000")
            retries.append(wrong.value.retries)
        assert retries == [2, 1]
        with pytest.raises(PinBlocked):
            session.verify_pin("000000")
        with pytest.raises(PinBlocked) as blocked:
            session.verify_pin("123456")
        assert blocked.value.retries == 0
        assert session.pin_status() == PinStatus(verified=False, retries=0)
    pins = run(opensc_env, "pkcs15-tool", "-r", card.reader, "--verify-pin", "--pin", "123456")
    assert pins.returncode != 0  # OpenSC is refused too
    assert "Authentication method blocked" in pins.stdout + pins.stderr
