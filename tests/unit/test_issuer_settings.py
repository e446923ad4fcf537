"""IssuerSettings.from_env: the production settings read from STARCARD_* variables."""

from __future__ import annotations

import pytest

from issuer.settings import IssuerSettings

SECRETS = {"STARCARD_HSM_PASSPHRASE": "pass", "STARCARD_PII_KEY": "00" * 32}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_refuses_to_start_without_the_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="STARCARD_HSM_PASSPHRASE, STARCARD_PII_KEY"):
        IssuerSettings.from_env()


def test_audit_settings_default_and_come_from_the_environment(env: pytest.MonkeyPatch) -> None:
    defaults = IssuerSettings.from_env()
    assert (defaults.audit_key_label, defaults.audit_checkpoint_every) == ("audit-es256-1", 1000)
    env.setenv("STARCARD_AUDIT_KEY_LABEL", "audit-es256-2")
    env.setenv("STARCARD_AUDIT_CHECKPOINT_EVERY", "250")
    settings = IssuerSettings.from_env()
    assert (settings.audit_key_label, settings.audit_checkpoint_every) == ("audit-es256-2", 250)


@pytest.mark.parametrize("bad", ["0", "-5", "ten", ""])
def test_a_checkpoint_interval_that_is_not_a_positive_number_is_refused(
    env: pytest.MonkeyPatch, bad: str
) -> None:
    env.setenv("STARCARD_AUDIT_CHECKPOINT_EVERY", bad)
    with pytest.raises(RuntimeError, match="STARCARD_AUDIT_CHECKPOINT_EVERY must be a whole"):
        IssuerSettings.from_env()
