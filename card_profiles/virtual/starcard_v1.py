"""StarCard v1 applet as a pure object: ``process(apdu) -> response``.

Implements every command of ``starcard-v1`` (docs/interfaces.md) over the profile data in
:data:`card_profiles.profiles.STARCARD_V1`, in short and extended form, with PUT CREDENTIAL
command chaining, ``61xx`` response chaining (GET RESPONSE) and ``6Cxx`` for a too-small
short Le.

Invariants:

* :meth:`VirtualStarCard.process` never raises: malformed input gets the proper status word,
  an unexpected internal failure gets 6F00 and leaves the state unchanged.
* A state change is saved (atomically, see :mod:`.state`) before it takes effect; a failed
  save answers 6F00 and keeps the old state. A chained PUT CREDENTIAL is buffered in RAM and
  written only with its last part; reset, an error or any other command discards the buffer,
  so a torn write leaves the old credential.
* Before SELECT only SELECT and GET RESPONSE are accepted (others: 6985).

Lifecycle transitions (SET LIFECYCLE, P1 = target): PERSONALIZATION→SECURED (needs key and
credential), SECURED↔LOCKED, and any non-terminated state→TERMINATED; everything else 6985.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from card_profiles.profiles import STARCARD_V1, Lifecycle
from card_profiles.virtual.command import MalformedApdu, ParsedCommand, parse_command
from card_profiles.virtual.state import CardState, load_state, save_state

log = logging.getLogger(__name__)

P = STARCARD_V1
CLA_CHAINING = 0x10
INS_GET_RESPONSE = 0xC0

SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_CONDITIONS = 0x6985
SW_TERMINATED = 0x6A81
SW_NOT_FOUND = 0x6A82
SW_NO_MEMORY = 0x6A84
SW_WRONG_P1P2 = 0x6A86
SW_DATA_NOT_FOUND = 0x6A88
SW_INS_UNKNOWN = 0x6D00
SW_CLA_UNKNOWN = 0x6E00
SW_INTERNAL = 0x6F00

_ALLOWED_TRANSITIONS = {
    (Lifecycle.PERSONALIZATION, Lifecycle.SECURED),
    (Lifecycle.SECURED, Lifecycle.LOCKED),
    (Lifecycle.LOCKED, Lifecycle.SECURED),
    (Lifecycle.PERSONALIZATION, Lifecycle.TERMINATED),
    (Lifecycle.SECURED, Lifecycle.TERMINATED),
    (Lifecycle.LOCKED, Lifecycle.TERMINATED),
}


class _Refused(Exception):
    """Internal: abort the command with status word ``sw``."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


class VirtualStarCard:
    """A StarCard v1 with its state in ``state_path`` (or only in memory if None).

    A missing state file means a new card: random 8-byte serial (or ``serial``), lifecycle
    PERSONALIZATION, saved at once. An existing file is loaded; raises ValueError if it is
    invalid or its serial differs from ``serial``, OSError if it cannot be read or written.
    """

    def __init__(self, state_path: Path | None = None, serial: bytes | None = None) -> None:
        self._path = state_path
        loaded = self._load(state_path)
        if loaded is None:
            state = CardState(serial or secrets.token_bytes(8), Lifecycle.PERSONALIZATION)
            self._save(state)
        else:
            if serial is not None and serial != loaded.serial:
                raise ValueError("state file belongs to a card with another serial")
            state = loaded
        self._state = state
        self._key = _load_key(state.private_key)
        self._selected = False
        self._chain: tuple[tuple[int, int, int], bytes] | None = None
        self._pending = b""

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
    def state_path(self) -> Path | None:
        return self._path

    def reset(self) -> None:
        """Power cycle / warm reset: deselect, drop chained input and pending output."""
        self._selected = False
        self._chain = None
        self._pending = b""

    def process(self, apdu: bytes) -> bytes:
        """Answer one command APDU with ``data ‖ SW1 SW2``. Never raises."""
        try:
            return self._process(bytes(apdu))
        except _Refused as refusal:
            self._chain = None
            return _sw(refusal.sw)
        except Exception:
            log.exception("internal error processing an APDU")
            self._chain = None
            self._pending = b""
            return _sw(SW_INTERNAL)

    # -- dispatch ---------------------------------------------------------------------------

    def _process(self, apdu: bytes) -> bytes:
        pending, self._pending = self._pending, b""
        try:
            cmd = parse_command(apdu)
        except MalformedApdu:
            raise _Refused(SW_WRONG_LENGTH) from None
        base_cla = cmd.cla & ~CLA_CHAINING
        if base_cla not in (P.cla_iso, P.cla_proprietary):
            raise _Refused(SW_CLA_UNKNOWN)
        chained = bool(cmd.cla & CLA_CHAINING)
        key = (cmd.ins, cmd.p1, cmd.p2)
        if self._chain is not None and (cmd.ins != P.ins_put_credential or self._chain[0] != key):
            self._chain = None
        if (base_cla, cmd.ins) == (P.cla_iso, INS_GET_RESPONSE) and not chained:
            return self._get_response(cmd, pending)
        handler = self._handler(base_cla, cmd.ins)
        if handler is None:
            known = self._handler(base_cla ^ P.cla_proprietary, cmd.ins) is not None
            raise _Refused(SW_CLA_UNKNOWN if known else SW_INS_UNKNOWN)
        if chained and cmd.ins != P.ins_put_credential:
            raise _Refused(SW_CLA_UNKNOWN)
        if not self._selected and cmd.ins != P.ins_select:
            raise _Refused(SW_CONDITIONS)
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
        }
        return table.get((cla, ins))

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
        head, rest = data[:ne], data[ne:]
        if not rest:
            return head + _sw(SW_OK)
        self._pending = rest
        return head + _sw(0x6100 | (min(len(rest), 256) & 0xFF))

    def _get_response(self, cmd: ParsedCommand, pending: bytes) -> bytes:
        if cmd.p1 or cmd.p2:
            raise _Refused(SW_WRONG_P1P2)
        if cmd.data or cmd.ne is None:
            raise _Refused(SW_WRONG_LENGTH)
        if not pending:
            raise _Refused(SW_CONDITIONS)
        return self._chunk(pending, cmd.ne)

    # -- commands ---------------------------------------------------------------------------

    def _select(self, cmd: ParsedCommand) -> bytes:
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x0C):
            raise _Refused(SW_WRONG_P1P2)
        self._selected = False
        if cmd.data != P.aid:
            raise _Refused(SW_NOT_FOUND)
        if self._state.lifecycle is Lifecycle.TERMINATED:
            raise _Refused(SW_TERMINATED)
        self._selected = True
        return _sw(SW_OK)

    def _get_data(self, cmd: ParsedCommand) -> bytes:
        _require_no_data(cmd)
        tag = (cmd.p1 << 8) | cmd.p2
        if tag == P.tag_serial:
            value = self._state.serial
        elif tag == P.tag_lifecycle:
            value = bytes([P.lifecycle_code(self._state.lifecycle)])
        elif tag == P.tag_public_key and self._key is not None:
            value = _public_point(self._key)
        else:
            raise _Refused(SW_DATA_NOT_FOUND)
        return self._respond(cmd, value)

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
        self._require_lifecycle(Lifecycle.PERSONALIZATION)
        if not cmd.data:
            raise _Refused(SW_WRONG_LENGTH)
        key = (cmd.ins, cmd.p1, cmd.p2)
        so_far = self._chain[1] if self._chain is not None else b""
        self._chain = None
        data = so_far + cmd.data
        if len(data) > P.max_credential_size:
            raise _Refused(SW_NO_MEMORY)
        if cmd.cla & CLA_CHAINING:
            self._chain = (key, data)
            return _sw(SW_OK)
        self._commit(replace(self._state, credential=data))
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
        return _sw(SW_OK)

    # -- state ------------------------------------------------------------------------------

    def _require_lifecycle(self, *allowed: Lifecycle) -> None:
        if self._state.lifecycle not in allowed:
            raise _Refused(SW_CONDITIONS)

    def _commit(self, state: CardState) -> None:
        """Save ``state`` first, then adopt it (a failed save raises, keeping the old one)."""
        self._save(state)
        self._state = state

    def _save(self, state: CardState) -> None:
        if self._path is not None:
            save_state(self._path, state)

    @staticmethod
    def _load(path: Path | None) -> CardState | None:
        if path is None:
            return None
        try:
            return load_state(path)
        except FileNotFoundError:
            return None


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
