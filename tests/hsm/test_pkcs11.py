"""PKCS#11 backend on SoftHSM2: configuration errors, PIN handling, session loss, timeouts,
what lives on the token, and the in-token card-key KDF against the reference."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest

from card_profiles import scp
from hsm_sim import (
    AuditOp,
    HsmModuleNotFound,
    HsmPinIncorrect,
    HsmTimeout,
    HsmTokenNotFound,
    HsmUnavailable,
    KeyPurpose,
    KeyRetired,
    pkcs11_backend,
)
from hsm_sim.pkcs11_backend import APPLICATION, Pkcs11Hsm, key_id
from tests.hsm.conftest import SOFTHSM2_MODULE, SoftHsmToken

CRED = KeyPurpose.CREDENTIAL_SIGNING
SERIAL = bytes.fromhex("0102030405060708")


def raw_session(token: SoftHsmToken) -> Any:
    """A second session of this process (already logged in through the backend)."""
    return token.raw_token().open(rw=True)


def test_wrong_pin_is_a_typed_error_tried_exactly_once(
    softhsm: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pkcs11
    from pkcs11 import TokenFlag

    logins: list[str] = []
    real_open = pkcs11_backend._open_session

    def counting_open(token: Any, pin: str) -> Any:
        logins.append(pin)
        return real_open(token, pin)

    monkeypatch.setattr(pkcs11_backend, "_open_session", counting_open)
    with pytest.raises(HsmPinIncorrect, match="not retried"):
        Pkcs11Hsm(SOFTHSM2_MODULE, softhsm.label, "000000")
    assert logins == ["000000"]
    with pkcs11_backend._TOKEN_LOCK:
        flags = pkcs11.lib(SOFTHSM2_MODULE).get_token(token_label=softhsm.label).flags
    assert not flags & TokenFlag.USER_PIN_LOCKED
    assert flags & TokenFlag.USER_PIN_COUNT_LOW  # exactly the one failed attempt was counted
    hsm = softhsm.open()
    assert hsm.labels() == []
    assert logins == ["000000", softhsm.pin]


def test_missing_token_names_the_label_and_the_fix(softhsm: SoftHsmToken) -> None:
    with pytest.raises(HsmTokenNotFound) as caught:
        Pkcs11Hsm(SOFTHSM2_MODULE, "no-such-token", softhsm.pin)
    message = str(caught.value)
    assert "'no-such-token'" in message
    assert softhsm.label in message  # the tokens that are present
    assert "softhsm2-util --init-token" in message


def test_missing_module_names_the_path(softhsm: SoftHsmToken, tmp_path: Any) -> None:
    missing = str(tmp_path / "libnothing.so")
    with pytest.raises(HsmModuleNotFound) as caught:
        Pkcs11Hsm(missing, softhsm.label, softhsm.pin)
    assert missing in str(caught.value)
    assert "apt-get install softhsm2" in str(caught.value)


def test_lost_session_is_reopened_once_and_audited(softhsm: SoftHsmToken) -> None:
    import pkcs11

    hsm = softhsm.open()
    public_key = hsm.create_key("cred", CRED)
    signer = hsm.signer("cred", CRED)
    with pkcs11_backend._TOKEN_LOCK:
        pkcs11.lib(SOFTHSM2_MODULE).reinitialize()  # C_Finalize: every session is gone
    signature = signer.sign(b"after the loss")
    from tests.hsm.test_backends import verify

    verify(public_key, signature, b"after the loss")
    logins = [e for e in hsm.audit_log() if e.op is AuditOp.LOGIN]
    assert [(e.ok, e.detail) for e in logins] == [(True, ""), (True, "relogin")]


def test_session_that_cannot_be_reopened_is_a_typed_error(
    softhsm: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pkcs11

    hsm = softhsm.open()
    hsm.create_key("cred", CRED)
    signer = hsm.signer("cred", CRED)

    def token_gone(token: Any, pin: str) -> Any:
        raise pkcs11.TokenNotPresent()

    monkeypatch.setattr(pkcs11_backend, "_open_session", token_gone)
    with pkcs11_backend._TOKEN_LOCK:
        pkcs11.lib(SOFTHSM2_MODULE).reinitialize()
    with pytest.raises(HsmUnavailable):
        signer.sign(b"x")
    assert [e.detail for e in hsm.audit_log() if e.op is AuditOp.LOGIN][-1] == "HsmUnavailable"
    monkeypatch.undo()
    assert len(signer.sign(b"token is back")) == 64


def test_wrong_pin_at_relogin_is_not_retried(
    softhsm: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pkcs11

    hsm = softhsm.open()
    hsm.create_key("cred", CRED)
    signer = hsm.signer("cred", CRED)
    attempts: list[int] = []

    def pin_changed(token: Any, pin: str) -> Any:
        attempts.append(1)
        raise pkcs11.PinIncorrect()

    monkeypatch.setattr(pkcs11_backend, "_open_session", pin_changed)
    with pkcs11_backend._TOKEN_LOCK:
        pkcs11.lib(SOFTHSM2_MODULE).reinitialize()
    with pytest.raises(HsmPinIncorrect):
        signer.sign(b"needs the token")
    assert attempts == [1]
    assert [e.detail for e in hsm.audit_log() if e.op is AuditOp.LOGIN][-1] == "HsmPinIncorrect"


def test_hung_call_times_out_and_the_backend_recovers(
    softhsm: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm = softhsm.open(timeout_s=0.5)
    hsm.create_key("cred", CRED)
    signer = hsm.signer("cred", CRED)
    release = threading.Event()
    real_sign = pkcs11_backend._sign_digest

    def hung_sign(key: Any, digest: bytes) -> bytes:
        release.wait(10)
        return real_sign(key, digest)

    monkeypatch.setattr(pkcs11_backend, "_sign_digest", hung_sign)
    started = time.monotonic()
    with pytest.raises(HsmTimeout):
        signer.sign(b"stuck")
    assert time.monotonic() - started < 3
    timeout_event = [e for e in hsm.audit_log() if e.op is AuditOp.SIGN][-1]
    assert (timeout_event.ok, timeout_event.detail) == (False, "HsmTimeout")
    assert timeout_event.data_sha256 == hashlib.sha256(b"stuck").hexdigest()
    # While the hung call holds the token, other calls time out too instead of piling up.
    with pytest.raises(HsmTimeout):
        hsm.has_key("cred")
    monkeypatch.setattr(pkcs11_backend, "_sign_digest", real_sign)
    release.set()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert len(signer.sign(b"recovered")) == 64
            break
        except HsmTimeout:
            assert time.monotonic() < deadline, "backend did not recover after the hang"


def test_token_objects_carry_label_purpose_and_metadata(softhsm: SoftHsmToken) -> None:
    from pkcs11 import Attribute, ObjectClass

    hsm = softhsm.open()
    hsm.create_key("status-1", KeyPurpose.STATUS_LIST_SIGNING)
    hsm.create_master_key("master-1", factory_export=True)
    with pkcs11_backend._TOKEN_LOCK:
        session = raw_session(softhsm)
        try:
            private = next(
                session.get_objects(
                    {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: "status-1"}
                )
            )
            assert private[Attribute.ID] == key_id("status-1", KeyPurpose.STATUS_LIST_SIGNING)
            assert private[Attribute.SIGN] is True
            assert private[Attribute.DERIVE] is False
            secret = next(
                session.get_objects(
                    {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: "master-1"}
                )
            )
            assert secret[Attribute.ID] == key_id(
                "master-1", KeyPurpose.CARD_KEY_DIVERSIFICATION, factory_export=True
            )
            assert secret[Attribute.DERIVE] is True
            assert secret[Attribute.SIGN] is False
            assert secret[Attribute.ENCRYPT] is False
            metas = list(
                session.get_objects(
                    {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: "status-1"}
                )
            )
            assert [m[Attribute.APPLICATION] for m in metas] == [APPLICATION]
        finally:
            session.close()


def test_retirement_is_enforced_by_the_token_itself(softhsm: SoftHsmToken) -> None:
    import pkcs11
    from pkcs11 import Attribute, Mechanism, ObjectClass

    hsm = softhsm.open()
    hsm.create_key("old", CRED)
    hsm.retire_key("old")
    with pkcs11_backend._TOKEN_LOCK:
        session = raw_session(softhsm)
        try:
            private = next(
                session.get_objects(
                    {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: "old"}
                )
            )
            assert private[Attribute.SIGN] is False
            with pytest.raises((pkcs11.PKCS11Error, AttributeError)):
                private.sign(bytes(32), mechanism=Mechanism.ECDSA)
        finally:
            session.close()


def test_retirement_by_another_session_is_honoured(softhsm: SoftHsmToken) -> None:
    from pkcs11 import Attribute, ObjectClass

    hsm = softhsm.open()
    hsm.create_key("cred", CRED)
    signer = hsm.signer("cred", CRED)
    signer.sign(b"cached handle")
    with pkcs11_backend._TOKEN_LOCK:  # e.g. the ceremony tool on the same token
        session = raw_session(softhsm)
        try:
            private = next(
                session.get_objects(
                    {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: "cred"}
                )
            )
            private[Attribute.SIGN] = False
        finally:
            session.close()
    with pytest.raises(KeyRetired):
        signer.sign(b"after")


def test_objects_of_other_applications_are_ignored(softhsm: SoftHsmToken) -> None:
    from pkcs11 import KeyType

    hsm = softhsm.open()
    hsm.create_key("ours", CRED)
    with pkcs11_backend._TOKEN_LOCK:
        session = raw_session(softhsm)
        try:
            session.generate_key(KeyType.AES, 256, label="theirs", id=b"\x01", store=True)
        finally:
            session.close()
    assert hsm.labels() == ["ours"]
    assert not hsm.has_key("theirs")


def test_in_token_kdf_matches_the_reference_bit_for_bit(softhsm: SoftHsmToken) -> None:
    """Import a known master key under our CKA_ID, then compare with card_profiles.scp."""
    from pkcs11 import Attribute, KeyType, ObjectClass

    master = bytes(range(32))
    purpose = KeyPurpose.CARD_KEY_DIVERSIFICATION
    hsm = softhsm.open()
    with pkcs11_backend._TOKEN_LOCK:
        session = raw_session(softhsm)
        try:
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.VALUE: master,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.DERIVE: True,
                    Attribute.LABEL: "known",
                    Attribute.ID: key_id("known", purpose, factory_export=True),
                }
            )
        finally:
            session.close()
    for serial in (SERIAL, bytes(8), b"\xff" * 8):
        assert hsm.factory_card_key("known", serial) == scp.derive_card_key(master, serial)
    host, card = b"H" * 8, b"C" * 8
    card_key = scp.derive_card_key(master, SERIAL)
    s_mac = scp.derive_session_mac_key(card_key, host, card)
    session_keys = hsm.scp_session(
        "known", SERIAL, host, card, scp.card_cryptogram(s_mac, host, card)
    )
    assert session_keys.s_mac == s_mac


def test_throughput_is_reported(softhsm: SoftHsmToken) -> None:
    """Not a benchmark gate: signs for a moment and checks every signature came back."""
    hsm = softhsm.open()
    hsm.create_key("fast", CRED)
    signer = hsm.signer("fast", CRED)
    count, started = 0, time.monotonic()
    while time.monotonic() - started < 0.5:
        assert len(signer.sign(b"m" * 120)) == 64
        count += 1
    assert count > 50  # SoftHSM signs thousands per second here
