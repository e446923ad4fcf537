"""HSM simulator: purposes, refusals, audit, persistence, thread safety."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import hsm_sim
from hsm_sim import (
    AuditOp,
    HsmSim,
    HsmStorageError,
    KeyExists,
    KeyNotFound,
    KeyPurpose,
    WrongKeyPurpose,
)
from verifier.core.signer import Signer as CoreSigner

PASS = b"correct horse battery staple"


def _verify(pub: ec.EllipticCurvePublicKey, raw: bytes, data: bytes) -> None:
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    pub.verify(der, data, ec.ECDSA(hashes.SHA256()))


class FakeClock:
    def __init__(self, t: float = 1_767_225_600.0) -> None:
        self.t = t

    def __call__(self) -> float:
        self.t += 1
        return self.t


def test_sign_produces_raw_es256_that_verifies() -> None:
    hsm = HsmSim()
    pub = hsm.create_key("cred-2026", KeyPurpose.CREDENTIAL_SIGNING)
    signer = hsm.signer("cred-2026", KeyPurpose.CREDENTIAL_SIGNING)
    assert signer.algorithm == "ES256"
    assert signer.public_key().public_numbers() == pub.public_numbers()
    sig = signer.sign(b"hello")
    _verify(pub, sig, b"hello")
    with pytest.raises(InvalidSignature):
        _verify(pub, sig, b"hellO")


def test_signer_satisfies_both_protocols() -> None:
    hsm = HsmSim()
    hsm.create_key("s", KeyPurpose.STATUS_LIST_SIGNING)
    signer = hsm.signer("s", KeyPurpose.STATUS_LIST_SIGNING)
    assert isinstance(signer, hsm_sim.Signer)
    assert isinstance(signer, CoreSigner)


def test_duplicate_label_is_refused_and_audited() -> None:
    hsm = HsmSim()
    first = hsm.create_key("k", KeyPurpose.CREDENTIAL_SIGNING)
    with pytest.raises(KeyExists):
        hsm.create_key("k", KeyPurpose.STATUS_LIST_SIGNING)
    assert hsm.public_key("k").public_numbers() == first.public_numbers()
    assert hsm.purpose_of("k") is KeyPurpose.CREDENTIAL_SIGNING
    last = hsm.audit_log()[-1]
    assert (last.op, last.label, last.ok, last.detail) == (
        AuditOp.CREATE_KEY,
        "k",
        False,
        "KeyExists",
    )


def test_unknown_label_raises_key_not_found() -> None:
    hsm = HsmSim()
    assert not hsm.has_key("nope")
    with pytest.raises(KeyNotFound):
        hsm.signer("nope", KeyPurpose.CREDENTIAL_SIGNING)
    with pytest.raises(KeyNotFound):
        hsm.public_key("nope")
    assert [(e.op, e.ok) for e in hsm.audit_log()] == [
        (AuditOp.GET_SIGNER, False),
        (AuditOp.PUBLIC_KEY, False),
    ]


def test_wrong_purpose_is_refused() -> None:
    hsm = HsmSim()
    hsm.create_key("status", KeyPurpose.STATUS_LIST_SIGNING)
    with pytest.raises(WrongKeyPurpose):
        hsm.signer("status", KeyPurpose.CREDENTIAL_SIGNING)
    event = hsm.audit_log()[-1]
    assert event.op is AuditOp.GET_SIGNER
    assert not event.ok
    assert event.purpose is KeyPurpose.CREDENTIAL_SIGNING


def test_diversification_keys_never_sign() -> None:
    hsm = HsmSim()
    hsm.create_key("div", KeyPurpose.CARD_KEY_DIVERSIFICATION)
    with pytest.raises(WrongKeyPurpose):
        hsm.signer("div", KeyPurpose.CARD_KEY_DIVERSIFICATION)


@pytest.mark.parametrize("label", ["", "x" * 129, "bad\nlabel"])
def test_bad_labels_are_refused(label: str) -> None:
    with pytest.raises(ValueError):
        HsmSim().create_key(label, KeyPurpose.CREDENTIAL_SIGNING)


def test_sign_requires_bytes() -> None:
    hsm = HsmSim()
    hsm.create_key("k", KeyPurpose.CREDENTIAL_SIGNING)
    with pytest.raises(TypeError):
        hsm.signer("k", KeyPurpose.CREDENTIAL_SIGNING).sign("text")  # type: ignore[arg-type]


def test_audit_log_records_every_operation_without_key_material() -> None:
    clock = FakeClock()
    hsm = HsmSim(clock=clock)
    hsm.create_key("c", KeyPurpose.CREDENTIAL_SIGNING)
    signer = hsm.signer("c", KeyPurpose.CREDENTIAL_SIGNING)
    signer.sign(b"payload-1")
    signer.sign(b"payload-2")
    with pytest.raises(WrongKeyPurpose):
        hsm.signer("c", KeyPurpose.TRUST_LIST_ROOT)
    log = hsm.audit_log()
    assert [(e.op, e.ok) for e in log] == [
        (AuditOp.CREATE_KEY, True),
        (AuditOp.GET_SIGNER, True),
        (AuditOp.SIGN, True),
        (AuditOp.SIGN, True),
        (AuditOp.GET_SIGNER, False),
    ]
    assert [e.time for e in log] == sorted(e.time for e in log)
    assert log[2].data_sha256 is not None and len(log[2].data_sha256) == 64
    # Test-only peek at the private scalar to prove it appears nowhere in the log.
    scalar = hsm._keys["c"].private_key.private_numbers().private_value
    text = repr(log)
    assert f"{scalar:064x}" not in text and str(scalar) not in text
    assert scalar.to_bytes(32, "big").hex() not in text


def test_no_public_api_hands_out_private_keys() -> None:
    hsm = HsmSim()
    result = hsm.create_key("c", KeyPurpose.CREDENTIAL_SIGNING)
    assert isinstance(result, ec.EllipticCurvePublicKey)
    signer = hsm.signer("c", KeyPurpose.CREDENTIAL_SIGNING)
    assert not any(isinstance(v, ec.EllipticCurvePrivateKey) for v in vars(signer).values())
    assert isinstance(hsm.public_key("c"), ec.EllipticCurvePublicKey)
    assert isinstance(signer.public_key(), ec.EllipticCurvePublicKey)


def test_keys_persist_encrypted_with_mode_0600_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    hsm = HsmSim(path, PASS)
    cred = hsm.create_key("cred", KeyPurpose.CREDENTIAL_SIGNING)
    status = hsm.create_key("status", KeyPurpose.STATUS_LIST_SIGNING)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "BEGIN ENCRYPTED PRIVATE KEY" in text
    assert "BEGIN PRIVATE KEY" not in text and "BEGIN EC PRIVATE KEY" not in text
    assert sorted(os.listdir(tmp_path)) == ["keys.json"], "no temporary files left behind"

    again = HsmSim(path, PASS)
    assert again.labels() == ["cred", "status"]
    assert again.purpose_of("status") is KeyPurpose.STATUS_LIST_SIGNING
    assert again.public_key("cred").public_numbers() == cred.public_numbers()
    sig = again.signer("status", KeyPurpose.STATUS_LIST_SIGNING).sign(b"x")
    _verify(status, sig, b"x")
    with pytest.raises(KeyExists):
        again.create_key("cred", KeyPurpose.CREDENTIAL_SIGNING)


def test_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    HsmSim(path, PASS).create_key("cred", KeyPurpose.CREDENTIAL_SIGNING)
    with pytest.raises(HsmStorageError):
        HsmSim(path, b"wrong passphrase")


def test_persistent_simulator_needs_a_passphrase(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        HsmSim(tmp_path / "keys.json")


def test_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    HsmSim(path, PASS).create_key("cred", KeyPurpose.CREDENTIAL_SIGNING)
    path.chmod(0o640)
    with pytest.raises(HsmStorageError):
        HsmSim(path, PASS)


def test_corrupt_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    HsmSim(path, PASS).create_key("cred", KeyPurpose.CREDENTIAL_SIGNING)
    doc = json.loads(path.read_text())
    doc["keys"].append(dict(doc["keys"][0]))  # duplicate label
    path.write_text(json.dumps(doc))
    with pytest.raises(HsmStorageError):
        HsmSim(path, PASS)
    path.write_text("{not json")
    with pytest.raises(HsmStorageError):
        HsmSim(path, PASS)


def test_failed_write_discards_the_new_key(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "keys.json"
    hsm = HsmSim(path, PASS)
    with pytest.raises(HsmStorageError):
        hsm.create_key("cred", KeyPurpose.CREDENTIAL_SIGNING)
    assert not hsm.has_key("cred")
    assert not hsm.audit_log()[-1].ok


def test_concurrent_signing_and_creation_are_safe() -> None:
    hsm = HsmSim()
    pub = hsm.create_key("c", KeyPurpose.CREDENTIAL_SIGNING)
    signer = hsm.signer("c", KeyPurpose.CREDENTIAL_SIGNING)
    results: list[tuple[bytes, bytes]] = []
    created: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(25):
            data = f"{n}-{i}".encode()
            sig = signer.sign(data)
            with lock:
                results.append((data, sig))
        try:
            hsm.create_key("race", KeyPurpose.STATUS_LIST_SIGNING)
            with lock:
                created.append(f"t{n}")
        except KeyExists:
            pass

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200
    for data, sig in results:
        _verify(pub, sig, data)
    assert len(created) == 1
    signs = [e for e in hsm.audit_log() if e.op is AuditOp.SIGN]
    assert len(signs) == 200
