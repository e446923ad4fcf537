"""HSM simulator: purposes, refusals, audit, persistence, thread safety, card master keys."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from Crypto.Cipher import AES
from Crypto.Hash import CMAC as RefCMAC
from Crypto.Protocol.KDF import SP800_108_Counter
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import hsm_sim
from card_profiles import scp
from hsm_sim import (
    AuditOp,
    CardCryptogramMismatch,
    ExportNotAllowed,
    HsmSim,
    HsmStorageError,
    KeyExists,
    KeyNotFound,
    KeyPurpose,
    KeyRetired,
    WrongKeyPurpose,
)
from hsm_sim.audit import event_from_json, event_to_json
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
    hsm.create_master_key("div")
    with pytest.raises(WrongKeyPurpose):
        hsm.signer("div", KeyPurpose.CARD_KEY_DIVERSIFICATION)
    with pytest.raises(WrongKeyPurpose):
        hsm.signer("div", KeyPurpose.CREDENTIAL_SIGNING)
    with pytest.raises(WrongKeyPurpose):
        hsm.public_key("div")
    assert hsm.purpose_of("div") is KeyPurpose.CARD_KEY_DIVERSIFICATION


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


# -- card master keys: diversification, secure-channel sessions, the factory operation ----------


def _card_challenge(card_key: bytes, serial: bytes) -> tuple[bytes, bytes, bytes]:
    """(host challenge, card challenge, card cryptogram) as a genuine card would answer."""
    hc, cc = os.urandom(8), os.urandom(8)
    s_mac = scp.derive_session_mac_key(card_key, hc, cc)
    return hc, cc, scp.card_cryptogram(s_mac, hc, cc)


def _ref_card_key(master: bytes, serial: bytes) -> bytes:
    """K_card computed independently (pycryptodome's SP 800-108 counter KDF and CMAC)."""

    def prf(key: bytes, data: bytes) -> bytes:
        return RefCMAC.new(key, msg=data, ciphermod=AES).digest()

    out = SP800_108_Counter(master, 16, prf, label=b"StarCard card key", context=serial)
    assert isinstance(out, bytes)
    return out


def test_signing_purposes_only_for_p256_keys_and_master_keys_only_diversify() -> None:
    hsm = HsmSim()
    with pytest.raises(WrongKeyPurpose):
        hsm.create_key("div", KeyPurpose.CARD_KEY_DIVERSIFICATION)
    assert not hsm.has_key("div")
    hsm.create_key("cred", KeyPurpose.CREDENTIAL_SIGNING)
    with pytest.raises(WrongKeyPurpose):
        hsm.scp_session("cred", bytes(8), bytes(8), bytes(8), bytes(8))
    with pytest.raises(WrongKeyPurpose):
        hsm.factory_card_key("cred", bytes(8))
    with pytest.raises(KeyNotFound):
        hsm.scp_session("nope", bytes(8), bytes(8), bytes(8), bytes(8))
    refused = [(e.op, e.ok, e.detail) for e in hsm.audit_log() if not e.ok]
    assert refused == [
        (AuditOp.CREATE_KEY, False, "WrongKeyPurpose"),
        (AuditOp.SCP_SESSION, False, "WrongKeyPurpose"),
        (AuditOp.FACTORY_CARD_KEY, False, "WrongKeyPurpose"),
        (AuditOp.SCP_SESSION, False, "KeyNotFound"),
    ]


def test_factory_export_is_refused_without_the_flag_and_audited() -> None:
    hsm = HsmSim()
    hsm.create_master_key("master")
    serial = bytes.fromhex("0011223344556677")
    with pytest.raises(ExportNotAllowed):
        hsm.factory_card_key("master", serial)
    last = hsm.audit_log()[-1]
    assert (last.op, last.ok, last.detail, last.card_serial) == (
        AuditOp.FACTORY_CARD_KEY,
        False,
        "ExportNotAllowed",
        "0011223344556677",
    )
    with pytest.raises(ValueError):
        hsm.factory_card_key("master", bytes(7))


def test_factory_export_gives_the_diversified_card_key_and_is_audited() -> None:
    hsm = HsmSim()
    hsm.create_master_key("master", factory_export=True)
    assert hsm.audit_log()[-1].detail == "factory_export"
    serial = bytes.fromhex("0011223344556677")
    card_key = hsm.factory_card_key("master", serial)
    master = hsm._keys["master"].secret  # type: ignore[union-attr]  # test-only peek
    assert card_key == _ref_card_key(master, serial)
    assert hsm.factory_card_key("master", bytes(8)) != card_key
    events = [e for e in hsm.audit_log() if e.op is AuditOp.FACTORY_CARD_KEY]
    assert [(e.ok, e.card_serial) for e in events] == [
        (True, "0011223344556677"),
        (True, "0000000000000000"),
    ]


def test_scp_session_checks_the_card_cryptogram_inside_the_hsm() -> None:
    hsm = HsmSim()
    hsm.create_master_key("master", factory_export=True)
    serial = os.urandom(8)
    card_key = hsm.factory_card_key("master", serial)
    hc, cc, cryptogram = _card_challenge(card_key, serial)
    keys = hsm.scp_session("master", serial, hc, cc, cryptogram)
    s_mac = scp.derive_session_mac_key(card_key, hc, cc)
    assert keys.s_mac == s_mac
    assert keys.host_cryptogram == scp.host_cryptogram(s_mac, hc, cc)
    with pytest.raises(CardCryptogramMismatch):
        hsm.scp_session("master", serial, hc, cc, bytes(a ^ 1 for a in cryptogram))
    with pytest.raises(CardCryptogramMismatch):  # a card of another serial
        hsm.scp_session("master", os.urandom(8), hc, cc, cryptogram)
    with pytest.raises(ValueError):
        hsm.scp_session("master", serial, hc, cc, cryptogram[:7])
    events = [e for e in hsm.audit_log() if e.op is AuditOp.SCP_SESSION]
    assert [(e.ok, e.detail) for e in events] == [
        (True, ""),
        (False, "CardCryptogramMismatch"),
        (False, "CardCryptogramMismatch"),
    ]
    assert events[0].card_serial == serial.hex()
    text = repr(hsm.audit_log())
    master = hsm._keys["master"].secret  # type: ignore[union-attr]
    for secret in (master, card_key, s_mac):
        assert secret.hex() not in text


def test_master_keys_persist_encrypted_with_their_flag(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    hsm = HsmSim(path, PASS)
    hsm.create_master_key("exportable", factory_export=True)
    hsm.create_master_key("sealed")
    hsm.create_key("cred", KeyPurpose.CREDENTIAL_SIGNING)
    serial = os.urandom(8)
    card_key = hsm.factory_card_key("exportable", serial)
    text = path.read_text()
    for label in ("exportable", "sealed"):
        secret = hsm._keys[label].secret  # type: ignore[union-attr]
        assert secret.hex() not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    again = HsmSim(path, PASS)
    assert again.labels() == ["exportable", "sealed", "cred"]
    assert again.purpose_of("sealed") is KeyPurpose.CARD_KEY_DIVERSIFICATION
    assert again.factory_card_key("exportable", serial) == card_key
    with pytest.raises(ExportNotAllowed):
        again.factory_card_key("sealed", serial)
    hc, cc, cryptogram = _card_challenge(card_key, serial)
    again.scp_session("exportable", serial, hc, cc, cryptogram)
    with pytest.raises(KeyExists):
        again.create_master_key("sealed")
    with pytest.raises(HsmStorageError):
        HsmSim(path, b"wrong passphrase")


def test_editing_the_export_flag_in_the_key_file_breaks_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    HsmSim(path, PASS).create_master_key("sealed")
    doc = json.loads(path.read_text())
    assert doc["keys"][0]["factory_export"] is False
    doc["keys"][0]["factory_export"] = True
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    with pytest.raises(HsmStorageError, match="altered"):
        HsmSim(path, PASS)


def test_retirement_is_written_to_the_key_file_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "hsm.json"
    clock = FakeClock()
    hsm = HsmSim(path, PASS, clock=clock)
    hsm.create_key("old", KeyPurpose.CREDENTIAL_SIGNING)
    hsm.create_master_key("m")
    hsm.retire_key("old")
    hsm.retire_key("m")
    entries = {e["label"]: e for e in json.loads(path.read_text())["keys"]}
    assert entries["old"]["created_at"] < entries["old"]["retired_at"] <= clock.t
    assert "retired_at" in entries["m"]
    again = HsmSim(path, PASS)
    assert again.is_retired("old") and again.is_retired("m")
    with pytest.raises(KeyRetired):
        again.signer("old", KeyPurpose.CREDENTIAL_SIGNING)
    with pytest.raises(KeyRetired):
        again.scp_session("m", bytes(8), bytes(8), bytes(8), bytes(8))


def test_key_file_without_retirements_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "hsm.json"
    HsmSim(path, PASS).create_key("k", KeyPurpose.STATUS_LIST_SIGNING)
    assert "retired_at" not in path.read_text()
    assert not HsmSim(path, PASS).is_retired("k")


def test_malformed_retirement_in_the_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hsm.json"
    HsmSim(path, PASS).create_key("k", KeyPurpose.STATUS_LIST_SIGNING)
    doc = json.loads(path.read_text())
    doc["keys"][0]["retired_at"] = "yesterday"
    path.write_text(json.dumps(doc))
    with pytest.raises(HsmStorageError, match="retired_at"):
        HsmSim(path, PASS)


def test_failed_retirement_write_leaves_the_key_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm = HsmSim(tmp_path / "hsm.json", PASS)
    hsm.create_key("k", KeyPurpose.CREDENTIAL_SIGNING)

    def disk_full(path: Path, keys: object) -> None:
        raise HsmStorageError(f"{path}: cannot write key file (No space left on device)")

    monkeypatch.setattr("hsm_sim.sim.save_keys", disk_full)
    with pytest.raises(HsmStorageError):
        hsm.retire_key("k")
    monkeypatch.undo()
    assert not hsm.is_retired("k")
    assert len(hsm.signer("k", KeyPurpose.CREDENTIAL_SIGNING).sign(b"still")) == 64
    retire_event = [e for e in hsm.audit_log() if e.op is AuditOp.RETIRE_KEY][-1]
    assert (retire_event.ok, retire_event.detail) == (False, "HsmStorageError")
    assert not HsmSim(tmp_path / "hsm.json", PASS).is_retired("k")


def test_audit_events_round_trip_through_json() -> None:
    hsm = HsmSim()
    hsm.create_master_key("m", factory_export=True)
    hsm.factory_card_key("m", bytes(8))
    hsm.create_key("k", KeyPurpose.CREDENTIAL_SIGNING)
    hsm.signer("k", KeyPurpose.CREDENTIAL_SIGNING).sign(b"x")
    hsm.retire_key("k")
    events = hsm.audit_log()
    assert [event_from_json(json.loads(json.dumps(event_to_json(e)))) for e in events] == events
    with pytest.raises(ValueError):
        event_from_json({"op": "sign"})
