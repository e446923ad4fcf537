"""The optional SM2-with-SM3 suite (:mod:`verifier.core.sm2`).

Without the ``[sm2]`` extra (``gmssl-pyx``) only the parts that need no SM2 arithmetic run:
the import guard, key validation, SubjectPublicKeyInfo/kid (checked against the OpenSSL CLI)
and the algorithm gates. With it, signatures made by the OpenSSL CLI verify through
``verify_sign1`` and ours verify in the OpenSSL CLI.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from tests.keysigner import KeySigner
from verifier.core.cose import ALGORITHMS, parse_sign1, sig_structure, sign1, verify_sign1
from verifier.core.errors import (
    BadSignature,
    CannotVerify,
    MalformedCredential,
    Sm2Unavailable,
    UnsupportedAlgorithm,
)
from verifier.core.keys import kid_for
from verifier.core.sm2 import (
    ALG_SM2_SM3,
    BACKEND_MODULE,
    DEFAULT_SIGNER_ID,
    SM2_N,
    Sm2PublicKey,
    backend_available,
    verify_sm2_sm3,
)
from verifier.core.trust import TrustedKey

ROOT = Path(__file__).resolve().parents[2]
G = bytes.fromhex(
    "04"
    "32c4ae2c1f1981195f9904466a39c9948fe30bbff2660be1715a4589334c74c7"
    "bc3736a2f4f6779c59bdcee36b692153d0a9877cc62a474002df32e52139f0a0"
)


def _openssl_has_sm2() -> bool:
    if shutil.which("openssl") is None:
        return False
    out = subprocess.run(
        ["openssl", "list", "-public-key-algorithms"], capture_output=True, text=True
    )
    return "SM2" in out.stdout


OPENSSL_SM2 = _openssl_has_sm2()
needs_openssl = pytest.mark.skipif(not OPENSSL_SM2, reason="openssl CLI without SM2")
needs_backend = pytest.mark.skipif(
    not backend_available(), reason="the [sm2] extra (gmssl-pyx) is not installed"
)


class OpensslSm2Key:
    """An SM2 key pair held by the OpenSSL CLI (an independent implementation)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = directory / "sm2.pem"
        self.pub = directory / "sm2.pub.pem"
        self._run("genpkey", "-algorithm", "SM2", "-out", str(self.key))
        self._run("pkey", "-in", str(self.key), "-pubout", "-out", str(self.pub))
        self.spki = self._run("pkey", "-pubin", "-in", str(self.pub), "-outform", "DER")

    def _run(self, *args: str) -> bytes:
        return subprocess.run(["openssl", *args], capture_output=True, check=True).stdout

    def _pkeyutl(self, *args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
        msg = self.dir / "msg"
        msg.write_bytes(data)
        common = ["-rawin", "-digest", "sm3", "-pkeyopt", "distid:1234567812345678"]
        return subprocess.run(
            ["openssl", "pkeyutl", *args, *common, "-in", str(msg)], capture_output=True
        )

    def sign(self, data: bytes) -> bytes:
        """Raw r || s over ``data``."""
        out = self.dir / "sig"
        self._pkeyutl(
            "-sign", "-inkey", str(self.key), "-out", str(out), data=data
        ).check_returncode()
        r, s = decode_dss_signature(out.read_bytes())
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verifies(self, data: bytes, raw: bytes) -> bool:
        sig = self.dir / "sig"
        sig.write_bytes(
            encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        )
        args = ("-verify", "-pubin", "-inkey", str(self.pub), "-sigfile", str(sig))
        done = self._pkeyutl(*args, data=data)
        return done.returncode == 0 and b"Success" in done.stdout


def hand_built(protected: dict[int, object], payload: bytes, signature: bytes) -> bytes:
    return cbor2.dumps(
        cbor2.CBORTag(18, [cbor2.dumps(protected, canonical=True), {}, payload, signature]),
        canonical=True,
    )


# -- without the extra ------------------------------------------------------------------


def test_importing_the_core_does_not_load_the_backend() -> None:
    code = f"import sys, verifier.core, verifier.core.sm2; print({BACKEND_MODULE!r} in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"


def test_missing_extra_raises_a_clear_cannot_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_backend(name: str, package: str | None = None) -> ModuleType:
        if name == BACKEND_MODULE:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_backend)
    assert backend_available() is False
    with pytest.raises(Sm2Unavailable, match=r"starcard\[sm2\]") as exc:
        verify_sm2_sm3(Sm2PublicKey(G), b"\x01" * 64, b"data")
    assert isinstance(exc.value, CannotVerify) and exc.value.verdict == "unknown"
    assert "gmssl-pyx" in exc.value.diagnostics()


def test_sm2_public_key_must_be_a_curve_point() -> None:
    assert Sm2PublicKey(G).point == G
    for bad in (G[:-1] + bytes([G[-1] ^ 1]), b"\x02" + G[1:33], b"\x05" + G[1:], bytes(65)):
        with pytest.raises(ValueError):
            Sm2PublicKey(bad)


def test_signature_shape_is_checked_before_the_backend() -> None:
    with pytest.raises(MalformedCredential, match="64"):
        verify_sm2_sm3(Sm2PublicKey(G), bytes(63), b"data")
    for r, s in ((0, 1), (1, 0), (SM2_N, 1), (1, SM2_N)):
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        with pytest.raises(BadSignature) as exc:
            verify_sm2_sm3(Sm2PublicKey(G), sig, b"data")
        assert "out of range" in exc.value.detail
    with pytest.raises(ValueError):
        verify_sm2_sm3(KeySigner().public_key(), bytes(64), b"data")


def test_sm2_alg_is_private_use_and_parses() -> None:
    assert ALG_SM2_SM3 < -65536 and ALGORITHMS[ALG_SM2_SM3] == "SM2SM3"
    key = Sm2PublicKey(G)
    msg = parse_sign1(hand_built({1: ALG_SM2_SM3, 4: kid_for(key)}, b"p", b"\x01" * 64))
    assert msg.alg == "SM2SM3"
    # Algorithm substitution both ways is refused before any SM2 arithmetic.
    with pytest.raises(UnsupportedAlgorithm):
        verify_sign1(msg, KeySigner().public_key())
    es256 = parse_sign1(hand_built({1: -7, 4: kid_for(key)}, b"p", b"\x01" * 64))
    with pytest.raises(UnsupportedAlgorithm):
        verify_sign1(es256, key)


def test_sm2_keys_are_trusted_only_as_sm2_keys() -> None:
    key = Sm2PublicKey(G)
    assert TrustedKey(kid_for(key), "SM2SM3", "credential", key, 0, 1).alg == "SM2SM3"
    with pytest.raises(ValueError):
        TrustedKey(kid_for(key), "ES256", "credential", key, 0, 1)  # algorithm substitution


@needs_openssl
def test_spki_and_kid_match_openssl(tmp_path: Path) -> None:
    key = OpensslSm2Key(tmp_path)
    pub = Sm2PublicKey.from_spki_der(key.spki)
    assert pub.spki_der() == key.spki
    assert kid_for(pub) == hashlib.sha256(key.spki).digest()[:8]
    with pytest.raises(MalformedCredential):
        Sm2PublicKey.from_spki_der(key.spki[:-1])
    p256_spki = (
        KeySigner()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(MalformedCredential):
        Sm2PublicKey.from_spki_der(p256_spki)


# -- with the extra ---------------------------------------------------------------------


class GmsslSigner:
    """Test double for an SM2 HSM key (GM/T 0018 SDF in production), via gmssl-pyx."""

    algorithm = "SM2SM3"

    def __init__(self) -> None:
        self._gm = importlib.import_module(BACKEND_MODULE)
        self._pub, self._priv = self._gm.sm2_key_generate()

    def public_key(self) -> Sm2PublicKey:
        return Sm2PublicKey(b"\x04" + self._pub)

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._gm.sm2_sign(self._priv, self._pub, data))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@needs_backend
@needs_openssl
def test_openssl_made_sm2_sign1_verifies_through_verify_sign1(tmp_path: Path) -> None:
    key = OpensslSm2Key(tmp_path)
    pub = Sm2PublicKey.from_spki_der(key.spki)
    protected = cbor2.dumps({1: ALG_SM2_SM3, 4: kid_for(pub), 16: 61}, canonical=True)
    payload = cbor2.dumps({1: "sc.example.cn"}, canonical=True)
    signature = key.sign(sig_structure(protected, payload))
    msg = parse_sign1(hand_built({1: ALG_SM2_SM3, 4: kid_for(pub), 16: 61}, payload, signature))
    verify_sign1(msg, pub)
    tampered = parse_sign1(
        hand_built({1: ALG_SM2_SM3, 4: kid_for(pub), 16: 61}, b"\xa0", signature)
    )
    with pytest.raises(BadSignature):
        verify_sign1(tampered, pub)
    with pytest.raises(BadSignature):
        verify_sm2_sm3(pub, signature, sig_structure(protected, payload), signer_id=b"other")
    assert DEFAULT_SIGNER_ID == b"1234567812345678"


@needs_backend
@needs_openssl
def test_our_sm2_sign1_verifies_in_openssl(tmp_path: Path) -> None:
    signer = GmsslSigner()
    pub = signer.public_key()
    data = sign1(b"payload", signer, kid_for(pub), {16: 61})
    msg = parse_sign1(data)
    assert msg.alg == "SM2SM3"
    verify_sign1(msg, pub)
    spki = tmp_path / "pub.der"
    spki.write_bytes(pub.spki_der())
    key = OpensslSm2Key.__new__(OpensslSm2Key)
    key.dir = tmp_path
    key.pub = tmp_path / "pub.pem"
    subprocess.run(
        ["openssl", "pkey", "-pubin", "-inform", "DER", "-in", str(spki), "-out", str(key.pub)],
        check=True,
        capture_output=True,
    )
    tbs = sig_structure(msg.protected_bytes, msg.payload)
    assert key.verifies(tbs, msg.signature)
    assert not key.verifies(tbs + b"x", msg.signature)


@needs_backend
def test_sm2_signed_credential_verifies_end_to_end() -> None:
    """An issuer on SM2-with-SM3: the same credential format, checked by verify_card."""
    from tests.unit.test_verify import NOW, STATUS, YEAR, VirtualCard
    from verifier.core.challenge import begin, challenge_bytes
    from verifier.core.credential import CredentialClaims, issue_credential, qr_token_binding
    from verifier.core.status_list import (
        MIN_ENTRIES,
        StatusList,
        StatusListCache,
        issue_status_list,
    )
    from verifier.core.trust import TrustStore
    from verifier.core.verify import verify_card

    issuer = GmsslSigner()
    card = VirtualCard()
    trust = TrustStore(
        [
            TrustedKey(
                kid_for(issuer.public_key()), "SM2SM3", "credential", issuer.public_key(),
                NOW - YEAR, NOW + YEAR,
            ),
            TrustedKey.for_public_key(STATUS.public_key(), "status_list", NOW - YEAR, NOW + YEAR),
        ]
    )  # fmt: skip
    claims = CredentialClaims(
        iss="sc.example.cn", iat=NOW, nbf=NOW, exp=NOW + YEAR, cti=bytes(8),
        card_key=card.point(), status_idx=1, status_uri="https://sc.example.cn/s/1",
        star_level=5, policy_version="2026.1", profile="starcard-v1",
        qr_hash=qr_token_binding("t"),
    )  # fmt: skip
    credential = issue_credential(claims, issuer, kid_for(issuer.public_key()))
    cache = StatusListCache()
    cache.accept(
        issue_status_list(
            StatusList(MIN_ENTRIES), "https://sc.example.cn/s/1", NOW - 60, NOW + 3600, 300,
            STATUS, kid_for(STATUS.public_key()),
        ),
        trust,
        NOW,
    )  # fmt: skip
    state = begin("t", b"c", NOW)
    signature = card.internal_authenticate(challenge_bytes(state))
    assert verify_card(credential, signature, state, trust, cache, NOW).star_level == 5
    tampered = bytearray(credential)
    tampered[-10] ^= 1
    with pytest.raises(BadSignature):
        verify_card(bytes(tampered), signature, state, trust, cache, NOW)
