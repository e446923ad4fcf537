"""One suite, three backends: in-process HsmSim, RemoteHsm on a server process, PKCS#11 on
SoftHSM2. Every test here runs against each (see ``conftest.py``)."""

from __future__ import annotations

import hashlib
import threading

import pytest
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
    Hsm,
    KeyExists,
    KeyNotFound,
    KeyPurpose,
    KeyRetired,
    WrongKeyPurpose,
)
from tests.hsm.conftest import Backend
from verifier.core.signer import Signer as CoreSigner

CRED = KeyPurpose.CREDENTIAL_SIGNING
STATUS = KeyPurpose.STATUS_LIST_SIGNING
ROOT = KeyPurpose.TRUST_LIST_ROOT
DIVERSIFY = KeyPurpose.CARD_KEY_DIVERSIFICATION
AUDIT = KeyPurpose.AUDIT_CHECKPOINT_SIGNING
SERIAL = bytes.fromhex("5343000000000042")
HOST_CHALLENGE = bytes.fromhex("1122334455667788")
CARD_CHALLENGE = bytes.fromhex("99aabbccddeeff00")


def verify(public_key: ec.EllipticCurvePublicKey, raw: bytes, data: bytes) -> None:
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))


def card_side(card_key: bytes) -> tuple[bytes, bytes]:
    """What a card keyed with ``card_key`` computes: (S-MAC, card cryptogram)."""
    s_mac = scp.derive_session_mac_key(card_key, HOST_CHALLENGE, CARD_CHALLENGE)
    return s_mac, scp.card_cryptogram(s_mac, HOST_CHALLENGE, CARD_CHALLENGE)


def last_event(hsm: Hsm, op: AuditOp) -> hsm_sim.AuditEvent:
    events = [e for e in hsm.audit_log() if e.op is op]
    assert events, f"no {op.value} event in the audit log"
    return events[-1]


def test_backend_implements_the_port(backend: Backend) -> None:
    assert isinstance(backend.hsm, Hsm)


def test_signature_verifies_with_cryptography(backend: Backend) -> None:
    hsm = backend.hsm
    public_key = hsm.create_key("cred-1", CRED)
    signer = hsm.signer("cred-1", CRED)
    assert isinstance(signer, hsm_sim.Signer)
    assert isinstance(signer, CoreSigner)
    assert signer.algorithm == "ES256"
    assert signer.public_key().public_numbers() == public_key.public_numbers()
    assert hsm.public_key("cred-1").public_numbers() == public_key.public_numbers()
    signature = signer.sign(b"credential payload")
    verify(public_key, signature, b"credential payload")
    with pytest.raises(InvalidSignature):
        verify(public_key, signature, b"credential payloaD")
    # ECDSA is randomized: two signatures differ, both verify
    again = signer.sign(b"credential payload")
    assert again != signature
    verify(public_key, again, b"credential payload")


def test_each_purpose_signs_only_as_itself(backend: Backend) -> None:
    hsm = backend.hsm
    for label, purpose in (("c", CRED), ("s", STATUS), ("r", ROOT), ("a", AUDIT)):
        hsm.create_key(label, purpose)
        assert hsm.purpose_of(label) is purpose
    refused = (("c", STATUS), ("s", ROOT), ("r", CRED), ("c", DIVERSIFY), ("a", CRED), ("c", AUDIT))
    for label, purpose in refused:
        with pytest.raises(WrongKeyPurpose):
            hsm.signer(label, purpose)
        refusal = last_event(hsm, AuditOp.GET_SIGNER)
        assert (refusal.label, refusal.purpose, refusal.ok) == (label, purpose, False)
        assert refusal.detail == "WrongKeyPurpose"
    verify(hsm.public_key("r"), hsm.signer("r", ROOT).sign(b"trust list"), b"trust list")
    verify(hsm.public_key("a"), hsm.signer("a", AUDIT).sign(b"checkpoint"), b"checkpoint")


def test_master_keys_never_sign_and_signing_keys_never_diversify(backend: Backend) -> None:
    hsm = backend.hsm
    with pytest.raises(WrongKeyPurpose):
        hsm.create_key("aes-by-mistake", DIVERSIFY)
    assert not hsm.has_key("aes-by-mistake")
    hsm.create_master_key("master")
    hsm.create_key("cred", CRED)
    assert hsm.purpose_of("master") is DIVERSIFY
    with pytest.raises(WrongKeyPurpose):
        hsm.signer("master", DIVERSIFY)
    with pytest.raises(WrongKeyPurpose):
        hsm.public_key("master")
    with pytest.raises(WrongKeyPurpose):
        hsm.scp_session("cred", SERIAL, HOST_CHALLENGE, CARD_CHALLENGE, bytes(8))
    with pytest.raises(WrongKeyPurpose):
        hsm.factory_card_key("cred", SERIAL)
    refusal = last_event(hsm, AuditOp.FACTORY_CARD_KEY)
    assert (refusal.ok, refusal.card_serial) == (False, SERIAL.hex())


def test_labels_are_never_reused(backend: Backend) -> None:
    hsm = backend.hsm
    first = hsm.create_key("k", CRED)
    with pytest.raises(KeyExists):
        hsm.create_key("k", STATUS)
    with pytest.raises(KeyExists):
        hsm.create_master_key("k")
    assert hsm.purpose_of("k") is CRED
    assert hsm.public_key("k").public_numbers() == first.public_numbers()
    refusal = last_event(hsm, AuditOp.CREATE_KEY)
    assert (refusal.label, refusal.ok, refusal.detail) == ("k", False, "KeyExists")


def test_unknown_labels_are_refused(backend: Backend) -> None:
    hsm = backend.hsm
    assert not hsm.has_key("ghost")
    with pytest.raises(KeyNotFound):
        hsm.public_key("ghost")
    with pytest.raises(KeyNotFound):
        hsm.purpose_of("ghost")
    with pytest.raises(KeyNotFound):
        hsm.signer("ghost", CRED)
    with pytest.raises(KeyNotFound):
        hsm.retire_key("ghost")
    with pytest.raises(KeyNotFound):
        hsm.is_retired("ghost")
    assert last_event(hsm, AuditOp.RETIRE_KEY).detail == "KeyNotFound"


def test_labels_in_creation_order(backend: Backend) -> None:
    hsm = backend.hsm
    hsm.create_key("b-first", STATUS)
    hsm.create_master_key("a-second")
    hsm.create_key("c-third", ROOT)
    assert hsm.labels() == ["b-first", "a-second", "c-third"]
    assert hsm.has_key("a-second")


def test_audit_log_records_operations_without_key_material(backend: Backend) -> None:
    hsm = backend.hsm
    hsm.create_key("cred", CRED)
    signer = hsm.signer("cred", CRED)
    signer.sign(b"payload one")
    with pytest.raises(WrongKeyPurpose):
        hsm.signer("cred", STATUS)
    hsm.create_master_key("factory", factory_export=True)
    card_key = hsm.factory_card_key("factory", SERIAL)
    s_mac, cryptogram = card_side(card_key)
    session = hsm.scp_session("factory", SERIAL, HOST_CHALLENGE, CARD_CHALLENGE, cryptogram)
    assert session.s_mac == s_mac

    events = hsm.audit_log()
    ops = [(e.op, e.label, e.ok) for e in events if e.op is not AuditOp.LOGIN]
    assert ops == [
        (AuditOp.CREATE_KEY, "cred", True),
        (AuditOp.GET_SIGNER, "cred", True),
        (AuditOp.SIGN, "cred", True),
        (AuditOp.GET_SIGNER, "cred", False),
        (AuditOp.CREATE_KEY, "factory", True),
        (AuditOp.FACTORY_CARD_KEY, "factory", True),
        (AuditOp.SCP_SESSION, "factory", True),
    ]
    sign_event = last_event(hsm, AuditOp.SIGN)
    assert sign_event.data_sha256 == hashlib.sha256(b"payload one").hexdigest()
    assert sign_event.purpose is CRED
    assert last_event(hsm, AuditOp.CREATE_KEY).detail == "factory_export"
    assert last_event(hsm, AuditOp.SCP_SESSION).card_serial == SERIAL.hex()
    dump = repr(events)
    for secret in (card_key, s_mac):
        assert secret.hex() not in dump
    assert all(e.time > 1_700_000_000 for e in events)


def test_secure_channel_and_factory_export(backend: Backend) -> None:
    hsm = backend.hsm
    hsm.create_master_key("factory", factory_export=True)
    card_key = hsm.factory_card_key("factory", SERIAL)
    assert len(card_key) == 16
    assert hsm.factory_card_key("factory", SERIAL) == card_key
    assert hsm.factory_card_key("factory", bytes(8)) != card_key
    s_mac, cryptogram = card_side(card_key)
    session = hsm.scp_session("factory", SERIAL, HOST_CHALLENGE, CARD_CHALLENGE, cryptogram)
    assert session.s_mac == s_mac
    assert session.host_cryptogram == scp.host_cryptogram(s_mac, HOST_CHALLENGE, CARD_CHALLENGE)
    forged = bytes([cryptogram[0] ^ 1]) + cryptogram[1:]
    with pytest.raises(CardCryptogramMismatch):
        hsm.scp_session("factory", SERIAL, HOST_CHALLENGE, CARD_CHALLENGE, forged)
    refusal = last_event(hsm, AuditOp.SCP_SESSION)
    assert (refusal.ok, refusal.card_serial) == (False, SERIAL.hex())


def test_non_exportable_master_key_refuses_factory_export(backend: Backend) -> None:
    hsm = backend.hsm
    hsm.create_master_key("office")
    with pytest.raises(ExportNotAllowed):
        hsm.factory_card_key("office", SERIAL)
    assert last_event(hsm, AuditOp.FACTORY_CARD_KEY).detail == "ExportNotAllowed"
    with pytest.raises(CardCryptogramMismatch):
        hsm.scp_session("office", SERIAL, HOST_CHALLENGE, CARD_CHALLENGE, bytes(8))


def test_keys_cannot_be_extracted(backend: Backend) -> None:
    hsm = backend.hsm
    hsm.create_key("cred", CRED)
    hsm.create_master_key("master")
    signer = hsm.signer("cred", CRED)
    for holder in (hsm, signer):
        for value in vars(holder).values():
            assert not isinstance(value, ec.EllipticCurvePrivateKey)
    backend.assert_not_extractable("cred")
    backend.assert_not_extractable("master")


def test_retired_key_signs_nothing_but_its_public_key_stays(backend: Backend) -> None:
    hsm = backend.hsm
    public_key = hsm.create_key("old", CRED)
    signer = hsm.signer("old", CRED)
    assert not hsm.is_retired("old")
    hsm.retire_key("old")
    assert hsm.is_retired("old")
    with pytest.raises(KeyRetired):
        signer.sign(b"after retirement")
    assert last_event(hsm, AuditOp.SIGN).detail == "KeyRetired"
    with pytest.raises(KeyRetired):
        hsm.signer("old", CRED)
    with pytest.raises(KeyRetired):
        hsm.retire_key("old")
    assert hsm.public_key("old").public_numbers() == public_key.public_numbers()
    assert hsm.purpose_of("old") is CRED
    assert "old" in hsm.labels()
    retired = [e for e in hsm.audit_log() if e.op is AuditOp.RETIRE_KEY]
    assert [(e.label, e.ok, e.detail) for e in retired] == [
        ("old", True, ""),
        ("old", False, "KeyRetired"),
    ]


def test_retired_master_key_diversifies_nothing(backend: Backend) -> None:
    hsm = backend.hsm
    hsm.create_master_key("factory", factory_export=True)
    card_key = hsm.factory_card_key("factory", SERIAL)
    _, cryptogram = card_side(card_key)
    hsm.retire_key("factory")
    with pytest.raises(KeyRetired):
        hsm.scp_session("factory", SERIAL, HOST_CHALLENGE, CARD_CHALLENGE, cryptogram)
    with pytest.raises(KeyRetired):
        hsm.factory_card_key("factory", SERIAL)


def test_keys_and_retirement_survive_a_restart(backend: Backend) -> None:
    hsm = backend.hsm
    cred = hsm.create_key("cred", CRED)
    status = hsm.create_key("status", STATUS)
    hsm.create_master_key("factory", factory_export=True)
    card_key = hsm.factory_card_key("factory", SERIAL)
    hsm.retire_key("status")
    hsm.create_key("audit", AUDIT)

    again = backend.restart()
    assert again.labels() == ["cred", "status", "factory", "audit"]
    assert again.purpose_of("cred") is CRED
    assert again.purpose_of("audit") is AUDIT
    assert again.purpose_of("factory") is DIVERSIFY
    assert again.is_retired("status") and not again.is_retired("cred")
    assert again.public_key("status").public_numbers() == status.public_numbers()
    with pytest.raises(KeyRetired):
        again.signer("status", STATUS)
    verify(cred, again.signer("cred", CRED).sign(b"after restart"), b"after restart")
    s_mac, cryptogram = card_side(card_key)
    session = again.scp_session("factory", SERIAL, HOST_CHALLENGE, CARD_CHALLENGE, cryptogram)
    assert session.s_mac == s_mac
    with pytest.raises(KeyExists):
        again.create_key("cred", CRED)


def test_concurrent_signers_all_verify(backend: Backend) -> None:
    hsm = backend.hsm
    public_key = hsm.create_key("busy", STATUS)
    signer = hsm.signer("busy", STATUS)
    failures: list[BaseException] = []
    results: list[tuple[bytes, bytes]] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            for i in range(15):
                data = f"list {n}.{i}".encode()
                signature = signer.sign(data)
                with lock:
                    results.append((data, signature))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert len(results) == 60
    for data, signature in results:
        verify(public_key, signature, data)
