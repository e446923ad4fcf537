"""Card profiles as data: everything that differs between card families lives here.

Invariant: session code (:mod:`card_profiles.starcard`) reads AIDs, instruction codes, tags,
lifecycle codes and limits only from a :class:`Profile`; a profile is immutable and hashable.
Fields added after the first release have defaults ("not supported"), so profiles written
against the older dataclass keep working.

The ``starcard-v1`` wire format is specified in ``docs/card-starcard-v1.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Lifecycle(IntEnum):
    """Card lifecycle states (GlobalPlatform style); the values are the StarCard v1 codes."""

    PERSONALIZATION = 0x01
    SECURED = 0x0F
    LOCKED = 0x7F
    TERMINATED = 0xFF


@dataclass(frozen=True)
class SecureChannelProfile:
    """Wire codes of a profile's secure channel (SCP03-like, see :mod:`card_profiles.scp`)."""

    ins_initialize_update: int
    ins_external_authenticate: int
    cla_secure_messaging: int
    """CLA bit set on a command that carries a C-MAC."""
    security_level: int
    """EXTERNAL AUTHENTICATE P1."""


@dataclass(frozen=True)
class Profile:
    """Wire-level description of one card application family."""

    name: str
    aid: bytes
    atr: bytes
    cla_iso: int
    cla_proprietary: int
    ins_select: int
    ins_get_data: int
    ins_generate_key: int
    ins_put_credential: int
    ins_read_credential: int
    ins_internal_authenticate: int
    ins_set_lifecycle: int
    tag_serial: int
    tag_lifecycle: int
    tag_public_key: int
    lifecycle_codes: tuple[tuple[Lifecycle, int], ...]
    serial_length: int
    public_key_length: int
    challenge_length: int
    signature_length: int
    max_credential_size: int
    extended_length: bool
    key_algorithm: str
    secure_channel: SecureChannelProfile | None = None
    """None: the card has no secure channel (writes are unauthenticated)."""
    tag_credential_version: int | None = None
    tag_key_info: int | None = None
    credential_version_length: int = 0
    """Bytes of version prefixed to PUT CREDENTIAL data (0: the credential is unversioned)."""

    def lifecycle_code(self, state: Lifecycle) -> int:
        """The byte this profile uses for ``state``. Raises KeyError if it has none."""
        for known, code in self.lifecycle_codes:
            if known is state:
                return code
        raise KeyError(state)

    def lifecycle_from_code(self, code: int) -> Lifecycle:
        """The state for lifecycle byte ``code``. Raises ValueError for an unknown byte."""
        for state, known in self.lifecycle_codes:
            if known == code:
                return state
        raise ValueError(f"unknown lifecycle code {code:#04x} for profile {self.name}")


STARCARD_V1 = Profile(
    name="starcard-v1",
    aid=bytes.fromhex("F0535441524341524401"),
    atr=bytes.fromhex("3B888001") + b"STARCARD" + bytes.fromhex("09"),
    cla_iso=0x00,
    cla_proprietary=0x80,
    ins_select=0xA4,
    ins_get_data=0xCA,
    ins_generate_key=0x46,
    ins_put_credential=0xDA,
    ins_read_credential=0xCB,
    ins_internal_authenticate=0x88,
    ins_set_lifecycle=0xF0,
    tag_serial=0x0101,
    tag_lifecycle=0x0102,
    tag_public_key=0x0103,
    lifecycle_codes=tuple((state, int(state)) for state in Lifecycle),
    serial_length=8,
    public_key_length=65,
    challenge_length=32,
    signature_length=64,
    max_credential_size=2048,
    extended_length=True,
    key_algorithm="ES256",
    secure_channel=SecureChannelProfile(
        ins_initialize_update=0x50,
        ins_external_authenticate=0x82,
        cla_secure_messaging=0x04,
        security_level=0x01,
    ),
    tag_credential_version=0x0104,
    tag_key_info=0x0105,
    credential_version_length=4,
)

PROFILES: dict[str, Profile] = {STARCARD_V1.name: STARCARD_V1}
"""Profiles by name (the ``--profile`` value of ``starcard-card``)."""
