"""StarCard v1 applet as a pure object: ``process(apdu) -> response``.

Implements ``docs/card-starcard-v1.md`` exactly, over the profile data in
:data:`card_profiles.profiles.STARCARD_V1`: every command in short and extended form, PUT
CREDENTIAL command chaining, ``61xx`` response chaining (GET RESPONSE), ``6Cxx`` for a
too-small short Le, and the secure channel of :mod:`card_profiles.scp` (INITIALIZE UPDATE,
EXTERNAL AUTHENTICATE, C-MAC with chaining) that every write needs.

Invariants:

* :meth:`VirtualStarCard.process` never raises, except :class:`PowerLost` when the
  power-loss switch fires or the card has no power: malformed input gets the proper status
  word, an unexpected internal failure gets 6F00 and leaves the state unchanged.
* A state change is saved (atomically, see :mod:`.state`) before it takes effect; a failed
  save answers 6F00 and keeps the old state. A chained PUT CREDENTIAL is buffered in RAM and
  written only with its last part; reset, an error or any other command discards the buffer.
  So a write torn by power loss leaves either the old or the new value, never a mix (as a
  Java Card transaction does).
* Secure-channel state (a pending INITIALIZE UPDATE, the open session) lives in RAM only: a
  reset or power loss ends it. The try counter lives in "EEPROM" and is decremented *before*
  a host cryptogram is checked, so cutting the power cannot save an attempt.

Power-loss switch: with ``power_loss_after=N`` the first N APDUs complete; during APDU N+1
the card loses power after ``power_loss_commits`` of that command's EEPROM writes (0: before
any), so the host gets no answer (:class:`PowerLost`, a
:class:`~card_profiles.errors.CardRemoved`). The card stays dead until :meth:`reset` powers
it on again, reloading its state from the file. The switch fires once.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from card_profiles.errors import CardRemoved
from card_profiles.profiles import STARCARD_V1, Lifecycle, SecureChannelProfile
from card_profiles.scp import (
    CHALLENGE_LENGTH,
    CRYPTOGRAM_LENGTH,
    MAC_LENGTH,
    SCP_PROTOCOL,
    MacChain,
    MacMismatch,
    card_cryptogram,
    derive_session_mac_key,
    host_cryptogram,
)
from card_profiles.virtual.command import (
    MalformedApdu,
    ParsedCommand,
    chunk_response,
    continue_response,
    parse_command,
)
from card_profiles.virtual.command import Refused as _Refused
from card_profiles.virtual.command import sw_bytes as _sw
from card_profiles.virtual.state import (
    AUTH_TRY_LIMIT,
    CardState,
    create_state,
    load_state,
    save_state,
)

log = logging.getLogger(__name__)

P = STARCARD_V1


def _secure_channel() -> SecureChannelProfile:
    assert P.secure_channel is not None
    return P.secure_channel


SC = _secure_channel()
CLA_CHAINING = 0x10
CLA_SM = SC.cla_secure_messaging
INS_GET_RESPONSE = 0xC0
VERSION_LENGTH = P.credential_version_length

SW_OK = 0x9000
SW_AUTH_FAILED = 0x63C0
SW_WRONG_LENGTH = 0x6700
SW_SECURITY = 0x6982
SW_AUTH_BLOCKED = 0x6983
SW_CONDITIONS = 0x6985
SW_WRONG_DATA = 0x6A80
SW_TERMINATED = 0x6A81
SW_NOT_FOUND = 0x6A82
SW_NO_MEMORY = 0x6A84
SW_WRONG_P1P2 = 0x6A86
SW_DATA_NOT_FOUND = 0x6A88
SW_INS_UNKNOWN = 0x6D00
SW_CLA_UNKNOWN = 0x6E00
SW_INTERNAL = 0x6F00

WRITE_INS = frozenset({P.ins_generate_key, P.ins_put_credential, P.ins_set_lifecycle})
"""Commands that need an open secure channel and a valid C-MAC."""
SM_INS = WRITE_INS | {P.ins_get_data, P.ins_read_credential, SC.ins_external_authenticate}
"""Commands that may carry a C-MAC (CLA 84/94)."""

_ALLOWED_TRANSITIONS = {
    (Lifecycle.PERSONALIZATION, Lifecycle.SECURED),
    (Lifecycle.SECURED, Lifecycle.LOCKED),
    (Lifecycle.LOCKED, Lifecycle.SECURED),
    (Lifecycle.PERSONALIZATION, Lifecycle.TERMINATED),
    (Lifecycle.SECURED, Lifecycle.TERMINATED),
    (Lifecycle.LOCKED, Lifecycle.TERMINATED),
}


class PowerLost(CardRemoved):
    """The virtual card lost power mid-command (power-loss switch) or has none."""


@dataclass(frozen=True)
class _PendingAuth:
    """What INITIALIZE UPDATE leaves for the EXTERNAL AUTHENTICATE that must follow it."""

    host_challenge: bytes
    card_challenge: bytes
    s_mac: bytes


def manufacture(
    state_path: Path | None,
    serial: bytes,
    card_key: bytes,
    *,
    key_version: int = 1,
    power_loss_after: int | None = None,
    power_loss_commits: int = 0,
) -> VirtualStarCard:
    """Make a new card (lifecycle PERSONALIZATION) with its serial, K_card and key version.

    With a ``state_path`` the state is written there first; raises FileExistsError if a
    card already lives there, ValueError for a bad serial, key or key version.
    """
    state = CardState(serial, Lifecycle.PERSONALIZATION, card_key, key_version=key_version)
    if state_path is not None:
        create_state(state_path, state)
    return VirtualStarCard(
        state_path,
        state=None if state_path is not None else state,
        power_loss_after=power_loss_after,
        power_loss_commits=power_loss_commits,
    )


class VirtualStarCard:
    """A StarCard v1 whose "EEPROM" is ``state_path`` (or, with ``state``, memory only).

    Exactly one of ``state_path`` (an existing state file, see :func:`manufacture`) and
    ``state`` must be given. Raises ValueError for an invalid state file or arguments,
    FileNotFoundError/OSError if the file cannot be read.
    """

    def __init__(
        self,
        state_path: Path | None = None,
        *,
        state: CardState | None = None,
        power_loss_after: int | None = None,
        power_loss_commits: int = 0,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if (state_path is None) == (state is None):
            raise ValueError("give either a state file or an in-memory state")
        if power_loss_after is not None and power_loss_after < 0:
            raise ValueError("power_loss_after must be >= 0")
        if power_loss_commits < 0:
            raise ValueError("power_loss_commits must be >= 0")
        self._path = state_path
        self._state = load_state(state_path) if state_path is not None else _given(state)
        self._key = _load_key(self._state.private_key)
        self._random = random_bytes
        self._power_loss_after = power_loss_after
        self._power_loss_commits = power_loss_commits
        self._tear_budget: int | None = None
        self._powered = True
        self._apdus = 0
        self._selected = False
        self._chain: tuple[tuple[int, int, int], bytes] | None = None
        self._pending = b""
        self._auth: _PendingAuth | None = None
        self._session: MacChain | None = None

    @property
    def atr(self) -> bytes:
        return P.atr

    @property
    def serial(self) -> bytes:
        return self._state.serial

    @property
    def lifecycle(self) -> Lifecycle:
        return self._state.lifecycle

    @property
    def state(self) -> CardState:
        """The state as on "EEPROM" (immutable)."""
        return self._state

    @property
    def state_path(self) -> Path | None:
        return self._path

    @property
    def apdu_count(self) -> int:
        """APDUs processed with power on since the card object was made."""
        return self._apdus

    @property
    def powered(self) -> bool:
        return self._powered

    @property
    def secure_channel_open(self) -> bool:
        return self._session is not None

    def reset(self) -> None:
        """Power on / warm reset: deselect, drop chained input, pending output, secure channel.

        After a power loss the state is reloaded from the file (EEPROM is the truth).
        """
        if not self._powered and self._path is not None:
            self._state = load_state(self._path)
            self._key = _load_key(self._state.private_key)
        self._powered = True
        self._clear_ram()

    def _clear_ram(self) -> None:
        self._selected = False
        self._chain = None
        self._pending = b""
        self._auth = None
        self._session = None

    def process(self, apdu: bytes) -> bytes:
        """Answer one command APDU with ``data ‖ SW1 SW2``.

        Raises PowerLost only when the card has no power or loses it during this APDU.
        """
        if not self._powered:
            raise PowerLost("the card has no power")
        self._apdus += 1
        if self._power_loss_after is not None and self._apdus > self._power_loss_after:
            self._power_loss_after = None
            self._tear_budget = self._power_loss_commits
        try:
            response = self._answer(bytes(apdu))
            if self._tear_budget is not None:
                raise PowerLost(f"power lost during APDU {self._apdus}, before the response")
            return response
        except PowerLost:
            self._powered = False
            self._clear_ram()
            raise
        finally:
            self._tear_budget = None

    def _answer(self, apdu: bytes) -> bytes:
        try:
            return self._process(apdu)
        except _Refused as refusal:
            self._chain = None
            return _sw(refusal.sw)
        except PowerLost:
            raise
        except Exception:
            log.exception("internal error processing an APDU")
            self._chain = None
            self._pending = b""
            return _sw(SW_INTERNAL)

    # -- dispatch ---------------------------------------------------------------------------

    def _process(self, apdu: bytes) -> bytes:
        pending, self._pending = self._pending, b""
        auth, self._auth = self._auth, None  # only the very next command may use it
        try:
            cmd = parse_command(apdu)
        except MalformedApdu:
            raise _Refused(SW_WRONG_LENGTH) from None
        chained = bool(cmd.cla & CLA_CHAINING)
        secured = bool(cmd.cla & CLA_SM)
        base_cla = cmd.cla & ~(CLA_CHAINING | CLA_SM)
        if base_cla not in (P.cla_iso, P.cla_proprietary):
            raise _Refused(SW_CLA_UNKNOWN)
        if secured and base_cla != P.cla_proprietary:
            raise _Refused(SW_CLA_UNKNOWN)
        key = (cmd.ins, cmd.p1, cmd.p2)
        if self._chain is not None and (cmd.ins != P.ins_put_credential or self._chain[0] != key):
            self._chain = None
        if (cmd.cla, cmd.ins) == (P.cla_iso, INS_GET_RESPONSE):
            return self._get_response(cmd, pending)
        handler = self._handler(base_cla, cmd.ins)
        if handler is None:
            known = self._handler(base_cla ^ P.cla_proprietary, cmd.ins) is not None
            raise _Refused(SW_CLA_UNKNOWN if known else SW_INS_UNKNOWN)
        if chained and cmd.ins != P.ins_put_credential:
            raise _Refused(SW_CLA_UNKNOWN)
        if secured and cmd.ins not in SM_INS:
            raise _Refused(SW_CLA_UNKNOWN)
        if not self._selected and cmd.ins != P.ins_select:
            raise _Refused(SW_CONDITIONS)
        if cmd.ins == SC.ins_external_authenticate:
            return self._external_authenticate(cmd, auth)
        if secured:
            cmd = self._unwrap(cmd)
        elif cmd.ins in WRITE_INS:
            self._session = None
            raise _Refused(SW_SECURITY)
        return handler(cmd)

    def _handler(self, cla: int, ins: int) -> Callable[[ParsedCommand], bytes] | None:
        table: dict[tuple[int, int], Callable[[ParsedCommand], bytes]] = {
            (P.cla_iso, P.ins_select): self._select,
            (P.cla_iso, P.ins_internal_authenticate): self._internal_authenticate,
            (P.cla_proprietary, P.ins_get_data): self._get_data,
            (P.cla_proprietary, P.ins_generate_key): self._generate_key,
            (P.cla_proprietary, P.ins_put_credential): self._put_credential,
            (P.cla_proprietary, P.ins_read_credential): self._read_credential,
            (P.cla_proprietary, P.ins_set_lifecycle): self._set_lifecycle,
            (P.cla_proprietary, SC.ins_initialize_update): self._initialize_update,
            (P.cla_proprietary, SC.ins_external_authenticate): self._unreachable,
        }
        return table.get((cla, ins))

    def _unwrap(self, cmd: ParsedCommand) -> ParsedCommand:
        """Verify and strip the C-MAC of a command in the open session (6982 otherwise)."""
        if self._session is None:
            raise _Refused(SW_SECURITY)
        try:
            data = self._session.verify(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data)
        except MacMismatch:
            self._session = None
            raise _Refused(SW_SECURITY) from None
        return replace(cmd, data=data)

    # -- response shaping -------------------------------------------------------------------

    def _respond(self, cmd: ParsedCommand, data: bytes) -> bytes:
        """Return ``data`` within Ne: 6Cxx for a too-small short Le, else 61xx chaining."""
        if not data:
            return _sw(SW_OK)
        ne = cmd.ne or 0
        if len(data) <= ne:
            return data + _sw(SW_OK)
        if cmd.ne is not None and not cmd.extended and len(data) <= 256:
            return _sw(0x6C00 | (len(data) & 0xFF))
        return self._chunk(data, ne)

    def _chunk(self, data: bytes, ne: int) -> bytes:
        answer, self._pending = chunk_response(data, ne)
        return answer

    def _get_response(self, cmd: ParsedCommand, pending: bytes) -> bytes:
        answer, self._pending = continue_response(cmd, pending)
        return answer

    # -- commands ---------------------------------------------------------------------------

    def _select(self, cmd: ParsedCommand) -> bytes:
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x0C):
            raise _Refused(SW_WRONG_P1P2)
        self._selected = False
        self._session = None
        if cmd.data != P.aid:
            raise _Refused(SW_NOT_FOUND)
        if self._state.lifecycle is Lifecycle.TERMINATED:
            raise _Refused(SW_TERMINATED)
        self._selected = True
        return _sw(SW_OK)

    def _get_data(self, cmd: ParsedCommand) -> bytes:
        _require_no_data(cmd)
        tag = (cmd.p1 << 8) | cmd.p2
        state = self._state
        if tag == P.tag_serial:
            value = state.serial
        elif tag == P.tag_lifecycle:
            value = bytes([P.lifecycle_code(state.lifecycle)])
        elif tag == P.tag_public_key and self._key is not None:
            value = _public_point(self._key)
        elif tag == P.tag_credential_version:
            value = state.credential_version.to_bytes(VERSION_LENGTH, "big")
        elif tag == P.tag_key_info:
            value = bytes([state.key_version, state.auth_tries])
        else:
            raise _Refused(SW_DATA_NOT_FOUND)
        return self._respond(cmd, value)

    def _initialize_update(self, cmd: ParsedCommand) -> bytes:
        if cmd.p2 != 0:
            raise _Refused(SW_WRONG_P1P2)
        if len(cmd.data) != CHALLENGE_LENGTH:
            raise _Refused(SW_WRONG_LENGTH)
        self._require_lifecycle(Lifecycle.PERSONALIZATION, Lifecycle.SECURED, Lifecycle.LOCKED)
        state = self._state
        if state.auth_tries == 0:
            raise _Refused(SW_AUTH_BLOCKED)
        if cmd.p1 not in (0x00, state.key_version):
            raise _Refused(SW_DATA_NOT_FOUND)
        self._session = None
        host_challenge = cmd.data
        card_challenge = self._random(CHALLENGE_LENGTH)
        s_mac = derive_session_mac_key(state.card_key, host_challenge, card_challenge)
        cryptogram = card_cryptogram(s_mac, host_challenge, card_challenge)
        self._auth = _PendingAuth(host_challenge, card_challenge, s_mac)
        response = (
            state.serial + bytes([state.key_version, SCP_PROTOCOL]) + card_challenge + cryptogram
        )
        return self._respond(cmd, response)

    def _external_authenticate(self, cmd: ParsedCommand, auth: _PendingAuth | None) -> bytes:
        self._session = None
        if not cmd.cla & CLA_SM:
            raise _Refused(SW_SECURITY)
        if auth is None:
            raise _Refused(SW_CONDITIONS)
        if cmd.p1 != SC.security_level or cmd.p2 != 0:
            raise _Refused(SW_WRONG_P1P2)
        if len(cmd.data) != CRYPTOGRAM_LENGTH + MAC_LENGTH:
            raise _Refused(SW_WRONG_LENGTH)
        tries = self._state.auth_tries
        if tries == 0:
            raise _Refused(SW_AUTH_BLOCKED)
        self._commit(replace(self._state, auth_tries=tries - 1))
        chain = MacChain(auth.s_mac)
        try:
            chain.verify(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data)
            mac_ok = True
        except MacMismatch:
            mac_ok = False
        expected = host_cryptogram(auth.s_mac, auth.host_challenge, auth.card_challenge)
        cryptogram_ok = hmac.compare_digest(cmd.data[:CRYPTOGRAM_LENGTH], expected)
        if not (mac_ok and cryptogram_ok):
            raise _Refused(SW_AUTH_FAILED | (tries - 1))
        self._commit(replace(self._state, auth_tries=AUTH_TRY_LIMIT))
        self._session = chain
        return _sw(SW_OK)

    def _unreachable(self, cmd: ParsedCommand) -> bytes:  # pragma: no cover - see _process
        raise _Refused(SW_INTERNAL)

    def _generate_key(self, cmd: ParsedCommand) -> bytes:
        _require_p1p2_zero(cmd)
        _require_no_data(cmd)
        self._require_lifecycle(Lifecycle.PERSONALIZATION)
        key = ec.generate_private_key(ec.SECP256R1())
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        self._commit(replace(self._state, private_key=scalar, credential=None))
        self._key = key
        return self._respond(cmd, _public_point(key))

    def _put_credential(self, cmd: ParsedCommand) -> bytes:
        _require_p1p2_zero(cmd)
        self._require_lifecycle(Lifecycle.PERSONALIZATION, Lifecycle.SECURED)
        if not cmd.data:
            raise _Refused(SW_WRONG_LENGTH)
        key = (cmd.ins, cmd.p1, cmd.p2)
        so_far = self._chain[1] if self._chain is not None else b""
        self._chain = None
        data = so_far + cmd.data
        if len(data) > VERSION_LENGTH + P.max_credential_size:
            raise _Refused(SW_NO_MEMORY)
        if cmd.cla & CLA_CHAINING:
            self._chain = (key, data)
            return _sw(SW_OK)
        if len(data) <= VERSION_LENGTH:
            raise _Refused(SW_WRONG_LENGTH)
        version = int.from_bytes(data[:VERSION_LENGTH], "big")
        if version <= self._state.credential_version:
            raise _Refused(SW_WRONG_DATA)
        credential = data[VERSION_LENGTH:]
        self._commit(replace(self._state, credential=credential, credential_version=version))
        return _sw(SW_OK)

    def _read_credential(self, cmd: ParsedCommand) -> bytes:
        _require_p1p2_zero(cmd)
        _require_no_data(cmd)
        if self._state.lifecycle is Lifecycle.TERMINATED:
            raise _Refused(SW_CONDITIONS)
        if self._state.credential is None:
            raise _Refused(SW_NOT_FOUND)
        return self._respond(cmd, self._state.credential)

    def _internal_authenticate(self, cmd: ParsedCommand) -> bytes:
        _require_p1p2_zero(cmd)
        self._require_lifecycle(Lifecycle.PERSONALIZATION, Lifecycle.SECURED)
        if len(cmd.data) != P.challenge_length:
            raise _Refused(SW_WRONG_LENGTH)
        if self._key is None:
            raise _Refused(SW_DATA_NOT_FOUND)
        der = self._key.sign(cmd.data, ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        return self._respond(cmd, r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def _set_lifecycle(self, cmd: ParsedCommand) -> bytes:
        _require_no_data(cmd)
        if cmd.p2 != 0:
            raise _Refused(SW_WRONG_P1P2)
        try:
            target = P.lifecycle_from_code(cmd.p1)
        except ValueError:
            raise _Refused(SW_WRONG_P1P2) from None
        current = self._state.lifecycle
        if (current, target) not in _ALLOWED_TRANSITIONS:
            raise _Refused(SW_CONDITIONS)
        personalized = self._key is not None and self._state.credential is not None
        issuing = current is Lifecycle.PERSONALIZATION and target is Lifecycle.SECURED
        if issuing and not personalized:
            raise _Refused(SW_CONDITIONS)
        self._commit(replace(self._state, lifecycle=target))
        if target is Lifecycle.TERMINATED:
            self._session = None
        return _sw(SW_OK)

    # -- state ------------------------------------------------------------------------------

    def _require_lifecycle(self, *allowed: Lifecycle) -> None:
        if self._state.lifecycle not in allowed:
            raise _Refused(SW_CONDITIONS)

    def _commit(self, state: CardState) -> None:
        """Save ``state`` first, then adopt it (a failed save raises, keeping the old one).

        The power-loss switch cuts the power here: before the write when its budget of
        completed writes is used up.
        """
        if self._tear_budget is not None:
            if self._tear_budget == 0:
                raise PowerLost(f"power lost during APDU {self._apdus}, before an EEPROM write")
            self._tear_budget -= 1
        if self._path is not None:
            save_state(self._path, state)
        self._state = state


def _given(state: CardState | None) -> CardState:
    assert state is not None
    return state


def _require_p1p2_zero(cmd: ParsedCommand) -> None:
    if cmd.p1 or cmd.p2:
        raise _Refused(SW_WRONG_P1P2)


def _require_no_data(cmd: ParsedCommand) -> None:
    if cmd.data:
        raise _Refused(SW_WRONG_LENGTH)


def _load_key(scalar: bytes | None) -> ec.EllipticCurvePrivateKey | None:
    if scalar is None:
        return None
    return ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())


def _public_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
