"""``starcard-hsm`` key ceremony: root, keys, rotation, retirement, trust list, journal.

The trust-list function is injected as the composition root outside ``hsm_sim`` will do it
(``verifier.core.trust_list``); the lists written are parsed back against the pinned root.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from hsm_sim import HsmSim, KeyPurpose, KeyRetired
from hsm_sim.ceremony import DAY, app
from hsm_sim.register import KeyRegister
from issuer.ceremony import app as starcard_hsm
from tests.hsm.conftest import PASSPHRASE, SoftHsmToken
from verifier.core.keys import kid_for
from verifier.core.trust_list import parse_trust_list

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


class Ceremony:
    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch, *base: str) -> None:
        self.directory = directory
        self.base = list(base) or ["--hsm-file", str(directory / "hsm.json")]
        self.app = starcard_hsm  # the production entry point, trust-list signing wired
        self.runner = CliRunner()
        monkeypatch.setenv("STARCARD_HSM_PASSPHRASE", PASSPHRASE)

    def run(self, *args: str, now: int = NOW, ok: bool = True) -> str:
        result = self.runner.invoke(self.app, [*self.base, "--now", str(now), *args])
        output = result.output + (result.stderr if result.stderr_bytes else "")
        assert (result.exit_code == 0) is ok, output
        return output

    @property
    def register(self) -> KeyRegister:
        return KeyRegister.load(self.directory / "key-register.json")

    def root_public_key(self) -> ec.EllipticCurvePublicKey:
        key = serialization.load_pem_public_key((self.directory / "root-public.pem").read_bytes())
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key

    def journal(self) -> list[dict[str, object]]:
        path = self.directory / "key-register.json.audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def ceremony(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Ceremony:
    return Ceremony(short_dir, monkeypatch)


def test_full_ceremony_produces_a_trust_list_verifiers_accept(ceremony: Ceremony) -> None:
    ceremony.run("init-root", "--label", "root-1", "--issuer", "district-credit")
    ceremony.run("create-key", "--purpose", "credential", "--label", "cred-1")
    ceremony.run("create-key", "--purpose", "status_list", "--label", "status-1")
    out = ceremony.directory / "trust-list.cbor"
    ceremony.run("sign-trust-list", "--out", str(out), "--valid-days", "10")

    trust_list = parse_trust_list(out.read_bytes(), ceremony.root_public_key(), NOW + 60)
    assert (trust_list.issuer, trust_list.sequence) == ("district-credit", 1)
    assert (trust_list.iat, trust_list.exp) == (NOW, NOW + 10 * DAY)
    hsm = HsmSim(ceremony.directory / "hsm.json", PASSPHRASE.encode())
    by_purpose = {e.purpose: e for e in trust_list.entries}
    assert by_purpose["credential"].kid == kid_for(hsm.public_key("cred-1"))
    assert by_purpose["status_list"].kid == kid_for(hsm.public_key("status-1"))
    assert by_purpose["credential"].sign_from == NOW
    assert hsm.purpose_of("root-1") is KeyPurpose.TRUST_LIST_ROOT
    assert ceremony.register.root is not None
    assert ceremony.register.root.kid == kid_for(ceremony.root_public_key()).hex()


def test_rotation_lists_the_successor_before_it_signs(ceremony: Ceremony) -> None:
    ceremony.run("init-root", "--label", "root")
    ceremony.run("create-key", "--purpose", "credential", "--label", "cred-1")
    later = NOW + 100 * DAY
    ceremony.run(
        "rotate", "--purpose", "credential", "--label", "cred-2", "--lead-days", "7", now=later
    )
    out = ceremony.directory / "tl.cbor"
    ceremony.run("sign-trust-list", "--out", str(out), now=later)

    entries = {
        e.kid: e
        for e in parse_trust_list(out.read_bytes(), ceremony.root_public_key(), later).entries
    }
    register = ceremony.register
    old, new = register.key("cred-1"), register.key("cred-2")
    handover = later + 7 * DAY
    assert entries[bytes.fromhex(new.kid)].sign_from == handover > later
    assert entries[bytes.fromhex(old.kid)].sign_until == handover
    assert entries[bytes.fromhex(old.kid)].verify_until == old.verify_until > handover
    assert register.active("credential", later) == old
    assert register.active("credential", handover) == new


def test_rotate_without_an_active_key_is_refused(ceremony: Ceremony) -> None:
    ceremony.run("init-root", "--label", "root")
    output = ceremony.run("rotate", "--purpose", "status_list", "--label", "s2", ok=False)
    assert "no active status_list key" in output
    assert not HsmSim(ceremony.directory / "hsm.json", PASSPHRASE.encode()).has_key("s2")


def test_retired_key_signs_nothing_and_leaves_the_list_when_its_window_ends(
    ceremony: Ceremony,
) -> None:
    ceremony.run("init-root", "--label", "root")
    ceremony.run(
        "create-key", "--purpose", "credential", "--label", "cred-1", "--verify-days", "30"
    )
    ceremony.run(
        "create-key", "--purpose", "credential", "--label", "cred-2", "--sign-from", str(NOW + DAY)
    )
    retire_at = NOW + 2 * DAY
    ceremony.run("retire", "--label", "cred-1", now=retire_at)
    hsm = HsmSim(ceremony.directory / "hsm.json", PASSPHRASE.encode())
    with pytest.raises(KeyRetired):
        hsm.signer("cred-1", KeyPurpose.CREDENTIAL_SIGNING)
    retired = ceremony.register.key("cred-1")
    assert (retired.retired_at, retired.sign_until) == (retire_at, retire_at)

    out = ceremony.directory / "tl.cbor"
    ceremony.run("sign-trust-list", "--out", str(out), now=retire_at)
    kids = {
        e.kid
        for e in parse_trust_list(out.read_bytes(), ceremony.root_public_key(), retire_at).entries
    }
    assert bytes.fromhex(retired.kid) in kids  # still verifies what it signed
    after = retired.verify_until
    ceremony.run("sign-trust-list", "--out", str(out), now=after)
    trust_list = parse_trust_list(out.read_bytes(), ceremony.root_public_key(), after)
    assert bytes.fromhex(retired.kid) not in {e.kid for e in trust_list.entries}
    assert trust_list.sequence == 2


def test_the_root_cannot_be_created_twice_or_retired(ceremony: Ceremony) -> None:
    ceremony.run("init-root", "--label", "root")
    assert "already has a root" in ceremony.run("init-root", "--label", "root-2", ok=False)
    assert "cannot be retired" in ceremony.run("retire", "--label", "root", ok=False)


def test_every_action_is_journaled_with_its_hsm_events(ceremony: Ceremony) -> None:
    ceremony.run("init-root", "--label", "root")
    ceremony.run("create-key", "--purpose", "credential", "--label", "cred")
    ceremony.run("create-key", "--purpose", "credential", "--label", "cred", ok=False)
    ceremony.run("sign-trust-list", "--out", str(ceremony.directory / "tl.cbor"))
    journal = ceremony.journal()
    actions = [(r["action"], r["ok"]) for r in journal if r["kind"] == "ceremony"]
    assert actions == [
        ("init-root", True),
        ("create-key", True),
        ("create-key", False),
        ("sign-trust-list", True),
    ]
    hsm_ops = [(r["op"], r["label"], r["ok"]) for r in journal if r["kind"] == "hsm"]
    assert hsm_ops == [
        ("create_key", "root", True),
        ("create_key", "cred", True),
        ("signer", "root", True),
        ("sign", "root", True),
    ]
    failed = next(r for r in journal if r["kind"] == "ceremony" and not r["ok"])
    assert "already registered" in str(failed["detail"])
    printed = ceremony.run("audit")
    assert "create-key cred RegisterError" in printed
    assert len(ceremony.run("audit", "--json").splitlines()) == len(journal)


def test_unwired_app_refuses_to_sign_and_says_why(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARCARD_HSM_PASSPHRASE", PASSPHRASE)
    runner = CliRunner()
    base = ["--hsm-file", str(short_dir / "hsm.json"), "--now", str(NOW)]
    assert runner.invoke(app, [*base, "init-root", "--label", "root"]).exit_code == 0
    assert (
        runner.invoke(
            app, [*base, "create-key", "--purpose", "credential", "--label", "c"]
        ).exit_code
        == 0
    )
    result = runner.invoke(app, [*base, "sign-trust-list", "--out", str(short_dir / "tl")])
    assert result.exit_code == 1
    assert "not wired" in result.output + result.stderr
    assert not (short_dir / "tl").exists()


def test_missing_passphrase_is_reported(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STARCARD_HSM_PASSPHRASE", raising=False)
    result = CliRunner().invoke(
        app, ["--hsm-file", str(short_dir / "hsm.json"), "init-root", "--label", "r"]
    )
    assert result.exit_code == 1
    assert "STARCARD_HSM_PASSPHRASE is not set" in result.output + result.stderr


def test_ceremony_on_a_pkcs11_token(softhsm: SoftHsmToken, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARCARD_PKCS11_PIN", softhsm.pin)
    directory = softhsm.directory
    ceremony = Ceremony(
        directory,
        monkeypatch,
        "--backend",
        "pkcs11",
        "--module",
        softhsm.module,
        "--token",
        softhsm.label,
        "--register",
        str(directory / "key-register.json"),
    )
    ceremony.run("init-root", "--label", "root")
    ceremony.run("create-key", "--purpose", "status_list", "--label", "status-1")
    out = directory / "tl.cbor"
    ceremony.run("sign-trust-list", "--out", str(out))
    trust_list = parse_trust_list(out.read_bytes(), ceremony.root_public_key(), NOW)
    assert [e.purpose for e in trust_list.entries] == ["status_list"]
    ceremony.run("retire", "--label", "status-1", now=NOW + DAY)
    hsm = softhsm.open()
    assert hsm.is_retired("status-1")
    assert hsm.labels() == ["root", "status-1"]
