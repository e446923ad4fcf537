"""Session with one StarCard application over any transport.

Invariants:

* Callers get typed values (``bytes`` of the lengths the profile fixes, :class:`Lifecycle`)
  or exceptions from :mod:`card_profiles.errors`; they never see a status word.
* Every response is checked against the profile before it is returned; a card answering
  9000 with the wrong shape raises :class:`~card_profiles.errors.MalformedResponse`.
* ``apdu_count`` counts the APDUs that went to the transport (a tap is 3: SELECT,
  READ CREDENTIAL, INTERNAL AUTHENTICATE).

* Writes (GENERATE KEY, PUT CREDENTIAL, SET LIFECYCLE) go with a C-MAC once
  :meth:`StarCardSession.open_secure_channel` has succeeded; without a secure channel they are
  sent plain and the card refuses them (:class:`~card_profiles.errors.SecurityStatusNotSatisfied`).
  The host forgets the secure channel on SELECT and whenever a MACed command fails in a way
  that may have left the two MAC chains out of step (anything but a refusal the card gives
  after checking the MAC: 6985, 6A80, 6A84, 6A86, 6A88). A MACed command is never resent.

Refusals raise StatusWordError subclasses, e.g. ConditionsNotSatisfied (wrong lifecycle),
NotFound (no application / no credential), DataNotFound (no key), FunctionNotSupported
(terminated card), NotEnoughMemory (credential too large), WrongData (credential version not
above the card's), SecurityStatusNotSatisfied (write without secure channel, bad C-MAC),
:class:`AuthenticationFailed` (63Cx) and :class:`AuthenticationBlocked` (6983). Transport
failures raise CardIOError, CardRemoved or CardTimeout. The authenticator's
:class:`~card_profiles.scp.CardNotAuthentic` passes through.

The wire format is specified in ``docs/card-starcard-v1.md``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric import ec

from card_profiles.apdu import EXTENDED_MAX_NE, SHORT_MAX_NC, ApduConnection, CommandApdu
from card_profiles.errors import MalformedResponse, StatusWordError
from card_profiles.profiles import STARCARD_V1, Lifecycle, Profile, SecureChannelProfile
from card_profiles.scp import (
    CHALLENGE_LENGTH,
    CRYPTOGRAM_LENGTH,
    MAC_LENGTH,
    SCP_PROTOCOL,
    SERIAL_LENGTH,
    CardChallenge,
    MacChain,
    SecureChannelAuthenticator,
)
from card_profiles.transport import Transport

INITIALIZE_UPDATE_RESPONSE_LENGTH = SERIAL_LENGTH + 2 + CHALLENGE_LENGTH + CRYPTOGRAM_LENGTH
KEY_INFO_LENGTH = 2
_SW_AUTH_BLOCKED = 0x6983
_SW_AUTH_FAILED = 0x63C0
_KEEPS_SESSION = frozenset({0x6985, 0x6A80, 0x6A84, 0x6A86, 0x6A88})
"""Refusals a card gives only after it verified the C-MAC: both MAC chains moved on."""


class AuthenticationFailed(StatusWordError):
    """63Cx: the card refused the host cryptogram or C-MAC of EXTERNAL AUTHENTICATE.

    ``tries_remaining`` is x; at 0 the secure channel is blocked for ever.
    """

    MEANING = "host authentication failed"

    def __init__(self, sw: int | None = None) -> None:
        super().__init__(sw)
        self.tries_remaining = self.sw & 0x0F


class AuthenticationBlocked(StatusWordError):
    """6983: the card's try counter is 0; it refuses mutual authentication for ever."""

    SW = _SW_AUTH_BLOCKED
    MEANING = "authentication method blocked"


@dataclass(frozen=True)
class SecureChannelInfo:
    """What the card disclosed when the secure channel opened (authenticated by it)."""

    serial: bytes
    key_version: int


@dataclass(frozen=True)
class KeyInfo:
    """GET DATA key information: the card's key version and EXTERNAL AUTHENTICATE tries left."""

    key_version: int
    tries_remaining: int


def _refine(exc: StatusWordError) -> StatusWordError:
    """The starcard-specific error for a status word errors.py does not know."""
    if exc.sw == _SW_AUTH_BLOCKED:
        return AuthenticationBlocked()
    if exc.sw & 0xFFF0 == _SW_AUTH_FAILED:
        return AuthenticationFailed(exc.sw)
    return exc


class StarCardSession:
    """The StarCard commands of ``profile`` over ``transport``.

    The session does not own the transport: closing it is the caller's job. Raises
    ValueError for a profile whose key algorithm is not ES256 (the only one checked here).
    """

    has_card_key: ClassVar[bool] = True
    """The card holds its own key and proves it with INTERNAL AUTHENTICATE (clone protection)."""

    def __init__(
        self,
        transport: Transport,
        profile: Profile = STARCARD_V1,
        *,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if profile.key_algorithm != "ES256":
            raise ValueError(f"unsupported key algorithm {profile.key_algorithm!r}")
        self._profile = profile
        self._transport = transport
        self._conn = ApduConnection(transport, extended_length=profile.extended_length)
        self._random = random_bytes
        self._mac: MacChain | None = None

    @property
    def profile(self) -> Profile:
        return self._profile

    @property
    def apdu_count(self) -> int:
        """APDUs actually sent so far (GET RESPONSE, resends and chain parts included)."""
        return self._conn.apdu_count

    @property
    def secure_channel_open(self) -> bool:
        """True between a successful :meth:`open_secure_channel` and its end (host view)."""
        return self._mac is not None

    def atr(self) -> bytes | None:
        """The card's ATR if the transport knows it (PC/SC does; in-process may not)."""
        atr = getattr(self._transport, "atr", None)
        return bytes(atr) if isinstance(atr, bytes | bytearray) else None

    def select(self) -> None:
        """SELECT the application by AID (ends any secure channel).

        Raises NotFound, FunctionNotSupported (terminated).
        """
        p = self._profile
        self._mac = None
        self._send(CommandApdu(p.cla_iso, p.ins_select, 0x04, 0x00, p.aid, le=0))

    def open_secure_channel(
        self, authenticator: SecureChannelAuthenticator, host_challenge: bytes | None = None
    ) -> SecureChannelInfo:
        """Mutual authentication: INITIALIZE UPDATE, then EXTERNAL AUTHENTICATE with C-MAC.

        ``authenticator`` (the HSM) checks the card cryptogram and supplies the host
        cryptogram and session MAC key. Returns the serial and key version the card used.
        Raises CardNotAuthentic (from the authenticator), AuthenticationFailed,
        AuthenticationBlocked, DataNotFound (unknown key version), MalformedResponse.
        """
        p, sc = self._profile, self._secure_channel()
        self._mac = None
        challenge = self._random(CHALLENGE_LENGTH) if host_challenge is None else host_challenge
        if len(challenge) != CHALLENGE_LENGTH:
            raise ValueError(f"host challenge must be {CHALLENGE_LENGTH} bytes")
        init = CommandApdu(p.cla_proprietary, sc.ins_initialize_update, 0, 0, challenge, le=0)
        response = _check_length(
            self._send(init), INITIALIZE_UPDATE_RESPONSE_LENGTH, "INITIALIZE UPDATE"
        )
        serial, key_version, protocol = response[:8], response[8], response[9]
        if protocol != SCP_PROTOCOL:
            raise MalformedResponse(f"unknown secure channel protocol {protocol:#04x}")
        card_challenge, cryptogram = response[10:18], response[18:26]
        keys = authenticator.open_session(
            CardChallenge(serial, key_version, challenge, card_challenge, cryptogram)
        )
        chain = MacChain(keys.s_mac)
        cla = p.cla_proprietary | sc.cla_secure_messaging
        ins, level = sc.ins_external_authenticate, sc.security_level
        data = chain.wrap(cla, ins, level, 0, keys.host_cryptogram)
        self._send(CommandApdu(cla, ins, level, 0, data))
        self._mac = chain
        return SecureChannelInfo(serial, key_version)

    def close_secure_channel(self) -> None:
        """Forget the session keys (the card ends its side on SELECT, reset or power loss)."""
        self._mac = None

    def serial(self) -> bytes:
        """The card serial number (``profile.serial_length`` bytes)."""
        return self._get_data(self._profile.tag_serial, self._profile.serial_length)

    def lifecycle(self) -> Lifecycle:
        """The lifecycle state. Raises MalformedResponse for an unknown code."""
        (code,) = self._get_data(self._profile.tag_lifecycle, 1)
        try:
            return self._profile.lifecycle_from_code(code)
        except ValueError as exc:
            raise MalformedResponse(str(exc)) from exc

    def public_key(self) -> bytes:
        """The card key as an uncompressed SEC1 point. Raises DataNotFound if there is none."""
        point = self._get_data(self._profile.tag_public_key, self._profile.public_key_length)
        return _check_point(point)

    def credential_version(self) -> int:
        """Version of the card's last written credential (0: none ever written)."""
        p = self._profile
        tag = _required(p.tag_credential_version, "credential version")
        return int.from_bytes(self._get_data(tag, p.credential_version_length), "big")

    def key_info(self) -> KeyInfo:
        """The card's secure-channel key version and EXTERNAL AUTHENTICATE tries left."""
        tag = _required(self._profile.tag_key_info, "key information")
        raw = self._get_data(tag, KEY_INFO_LENGTH)
        return KeyInfo(raw[0], raw[1])

    def generate_key(self) -> bytes:
        """Generate a new card key (clears the credential); return its public point.

        Needs the secure channel (else SecurityStatusNotSatisfied); raises
        ConditionsNotSatisfied outside PERSONALIZATION.
        """
        p = self._profile
        point = self._send_write(CommandApdu(p.cla_proprietary, p.ins_generate_key, 0, 0, le=0))
        return _check_point(_check_length(point, p.public_key_length, "public key"))

    def write_credential(self, data: bytes, version: int) -> None:
        """Store ``data`` as credential ``version`` (atomically replacing the old one).

        Needs the secure channel. Raises ValueError for empty data, data above
        ``profile.max_credential_size`` or a version outside 1..2^32-1 (without sending
        anything); WrongData if ``version`` is not above the card's; ConditionsNotSatisfied
        when LOCKED; SecurityStatusNotSatisfied without a secure channel.
        """
        p = self._profile
        if not data:
            raise ValueError("credential must not be empty")
        if len(data) > p.max_credential_size:
            raise ValueError(f"credential of {len(data)} bytes exceeds {p.max_credential_size}")
        width = p.credential_version_length
        if not 1 <= version < 1 << (8 * width):
            raise ValueError(f"credential version must be 1..{(1 << (8 * width)) - 1}")
        payload = version.to_bytes(width, "big") + bytes(data)
        self._send_write(CommandApdu(p.cla_proprietary, p.ins_put_credential, 0, 0, payload))

    def read_credential(self) -> bytes:
        """The stored credential. Raises NotFound if none, ConditionsNotSatisfied if terminated."""
        p = self._profile
        command = CommandApdu(p.cla_proprietary, p.ins_read_credential, 0, 0, le=EXTENDED_MAX_NE)
        data = self._send(command)
        if not data or len(data) > p.max_credential_size:
            raise MalformedResponse(f"credential of {len(data)} bytes")
        return data

    def internal_authenticate(self, challenge: bytes) -> bytes:
        """Sign ``challenge`` with the card key; return the raw ``r ‖ s`` signature.

        Raises ValueError if the challenge length is not ``profile.challenge_length``;
        DataNotFound if the card has no key; ConditionsNotSatisfied when LOCKED/TERMINATED.
        """
        p = self._profile
        if len(challenge) != p.challenge_length:
            raise ValueError(f"challenge must be {p.challenge_length} bytes")
        command = CommandApdu(p.cla_iso, p.ins_internal_authenticate, 0, 0, bytes(challenge), le=0)
        signature = self._send(command)
        return _check_length(signature, p.signature_length, "signature")

    def set_lifecycle(self, target: Lifecycle) -> None:
        """Move the card to ``target`` (needs the secure channel).

        Raises ConditionsNotSatisfied if not allowed now, SecurityStatusNotSatisfied without
        a secure channel.
        """
        p = self._profile
        code = p.lifecycle_code(target)
        self._send_write(CommandApdu(p.cla_proprietary, p.ins_set_lifecycle, code, 0))

    def secure(self) -> None:
        """PERSONALIZATION → SECURED. Raises ConditionsNotSatisfied without key and credential."""
        self.set_lifecycle(Lifecycle.SECURED)

    def _get_data(self, tag: int, length: int) -> bytes:
        p = self._profile
        command = CommandApdu(p.cla_proprietary, p.ins_get_data, tag >> 8, tag & 0xFF, le=0)
        return _check_length(self._send(command), length, f"GET DATA {tag:04X}")

    def _secure_channel(self) -> SecureChannelProfile:
        if self._profile.secure_channel is None:
            raise ValueError(f"profile {self._profile.name} has no secure channel")
        return self._profile.secure_channel

    def _send(self, command: CommandApdu) -> bytes:
        try:
            return self._conn.send(command)
        except StatusWordError as exc:
            refined = _refine(exc)
            if refined is exc:
                raise
            raise refined from None

    def _send_write(self, command: CommandApdu) -> bytes:
        """Send a write: with C-MAC (chained by hand if needed) in a secure channel, else plain."""
        chain = self._mac
        if chain is None:
            return self._send(command)
        sc = self._secure_channel()
        cla = command.cla | sc.cla_secure_messaging
        data = command.data
        room = SHORT_MAX_NC - MAC_LENGTH
        parts = [data]
        if not self._conn.extended_length and len(data) > room:
            parts = [data[i : i + room] for i in range(0, len(data), room)]
        try:
            for part in parts[:-1]:
                head = cla | 0x10
                wrapped = chain.wrap(head, command.ins, command.p1, command.p2, part)
                self._send(CommandApdu(head, command.ins, command.p1, command.p2, wrapped))
            wrapped = chain.wrap(cla, command.ins, command.p1, command.p2, parts[-1])
            last = CommandApdu(cla, command.ins, command.p1, command.p2, wrapped, command.le)
            return self._send(last)
        except StatusWordError as exc:
            if exc.sw not in _KEEPS_SESSION:
                self._mac = None
            raise
        except BaseException:
            self._mac = None
            raise


def _required(tag: int | None, what: str) -> int:
    if tag is None:
        raise ValueError(f"the profile has no {what} data object")
    return tag


def _check_length(data: bytes, length: int, what: str) -> bytes:
    if len(data) != length:
        raise MalformedResponse(f"{what}: expected {length} bytes, got {len(data)}")
    return data


def _check_point(point: bytes) -> bytes:
    """Require an uncompressed SEC1 point that lies on P-256 (the ES256 curve)."""
    if not point or point[0] != 0x04:
        raise MalformedResponse("public key is not an uncompressed SEC1 point")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise MalformedResponse("public key is not a valid P-256 point") from exc
    return point
