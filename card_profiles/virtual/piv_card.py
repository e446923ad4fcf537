"""A virtual PIV card (NIST SP 800-73-4 subset) as a pure object: ``process(apdu) -> response``.

Implemented: SELECT (answers the application property template), GET DATA (Discovery 7E and
the stored data objects: CHUID, CCC, Key History, certificates, the StarCard credential
object, ...), PUT DATA, GENERATE ASYMMETRIC KEY PAIR (P-256 in 9E), GENERAL AUTHENTICATE
(card management key 9B with AES witness/challenge or single challenge; ECDSA signature with
9E, no PIN needed), VERIFY (PIN 80), CHANGE REFERENCE DATA (PIN 80, PUK 81), RESET RETRY
COUNTER, GET RESPONSE (61xx) and command chaining (CLA 10). Run it under vpcd with
``python -m card_profiles.virtual.piv_card --port 35963 --state FILE``.

Invariants:

* :meth:`VirtualPivCard.process` never raises: a malformed or refused command gets its
  status word; an unexpected failure gets 6F00 and leaves the state unchanged.
* A state change (key, objects, PIN, retry counters) is saved atomically (temp file, fsync,
  ``os.replace``) before it takes effect; a failed save answers 6F00 and keeps the old state.
* Security status (PIN verified, management key authenticated) lives in RAM only and is
  cleared by a reset. A wrong PIN/PUK is counted in the file before the answer leaves.
* With ``extended_length=False`` the ATR does not advertise extended length and an extended
  APDU is refused with 6700; long answers then come in 61xx pieces.
* Every randomness (GUID, key generation, witness, challenge) comes from the injected
  ``random_bytes``; signatures are deterministic (RFC 6979), so a seeded card is reproducible.

The private key and PIN are stored in clear: this is a test card, not a secure element.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from card_profiles.piv import (
    P256_ORDER,
    PIV_AID,
    AesManagementKey,
    Algorithm,
    KeyRef,
    ObjectTag,
)
from card_profiles.tlv import Tlv, TlvError, encode_all, encode_tlv, parse_all, parse_single
from card_profiles.virtual.command import (
    MalformedApdu,
    ParsedCommand,
    chunk_response,
    continue_response,
    parse_command,
)
from card_profiles.virtual.command import Refused as _Refused
from card_profiles.virtual.command import sw_bytes as _sw

log = logging.getLogger(__name__)

RandomBytes = Callable[[int], bytes]

DEFAULT_MANAGEMENT_KEY = bytes.fromhex("01020304050607080102030405060708")
"""AES-128 management key of a new virtual card (a test value, like a vendor transport key)."""
DEFAULT_PIN = "123456"
DEFAULT_PUK = "12345678"
DEFAULT_EXPIRATION = "20351231"
PIN_TRIES = 3
PUK_TRIES = 3
MAX_OBJECT_SIZE = 4096
MAX_CHAINED_DATA = MAX_OBJECT_SIZE + 16
PIN_PROTECTED = frozenset(
    {
        ObjectTag.FINGERPRINTS,
        ObjectTag.FACIAL_IMAGE,
        ObjectTag.PRINTED_INFORMATION,
        ObjectTag.IRIS_IMAGES,
    }
)
LABEL = b"StarCard virtual PIV"
STATE_FORMAT = "starcard-piv-virtual-state"
STATE_VERSION = 1

INS_SELECT, INS_GET_DATA, INS_PUT_DATA, INS_GENERATE = 0xA4, 0xCB, 0xDB, 0x47
INS_GENERAL_AUTHENTICATE, INS_VERIFY, INS_CHANGE, INS_RESET_RETRY = 0x87, 0x20, 0x24, 0x2C
INS_GET_RESPONSE = 0xC0
CLA_CHAINING = 0x10
CHAINABLE = frozenset({INS_PUT_DATA, INS_GENERAL_AUTHENTICATE, INS_GENERATE})
PIN, PUK = 0x80, 0x81

SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_SECURITY = 0x6982
SW_BLOCKED = 0x6983
SW_CONDITIONS = 0x6985
SW_CHAINING_UNSUPPORTED = 0x6884
SW_WRONG_DATA = 0x6A80
SW_NOT_FOUND = 0x6A82
SW_NO_MEMORY = 0x6A84
SW_WRONG_P1P2 = 0x6A86
SW_DATA_NOT_FOUND = 0x6A88
SW_INS_UNKNOWN = 0x6D00
SW_CLA_UNKNOWN = 0x6E00
SW_INTERNAL = 0x6F00


def make_atr(*, extended_length: bool) -> bytes:
    """ATR of the virtual card: T=1, historical bytes naming the PIV AID and the capabilities.

    Historical bytes: category 80, compact-TLV F9 (first 9 bytes of the PIV AID) and 73
    (card capabilities: selection by full DF name; 1-byte data units; command chaining, plus
    extended Lc/Le when ``extended_length``).
    """
    caps = bytes([0x80, 0x01, 0xC0 if extended_length else 0x80])
    hist = bytes([0x80, 0xF9]) + PIV_AID[:9] + bytes([0x73]) + caps
    body = bytes([0x80 | len(hist), 0x80, 0x01]) + hist  # T0, TD1 (TD2 follows), TD2 = T=1
    check = 0
    for byte in body:
        check ^= byte
    return b"\x3b" + body + bytes([check])


PIV_ATR = make_atr(extended_length=True)
PIV_ATR_SHORT_ONLY = make_atr(extended_length=False)


# -- persistent state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PivCardState:
    """Everything the card remembers across power cycles. Treat ``objects`` as read-only."""

    guid: bytes
    management_key: bytes
    pin: str = DEFAULT_PIN
    puk: str = DEFAULT_PUK
    pin_retries: int = PIN_TRIES
    puk_retries: int = PUK_TRIES
    card_key: bytes | None = None
    """P-256 private scalar of slot 9E (32 bytes), or None before GENERATE."""
    objects: Mapping[int, bytes] = field(default_factory=dict)
    """Data objects by tag: the content inside their 53 container."""

    def __post_init__(self) -> None:
        if len(self.guid) != 16:
            raise ValueError("GUID must be 16 bytes")
        AesManagementKey(self.management_key)  # validates the length
        if self.card_key is not None and len(self.card_key) != 32:
            raise ValueError("card key must be a 32-byte scalar")
        if not (0 <= self.pin_retries <= PIN_TRIES and 0 <= self.puk_retries <= PUK_TRIES):
            raise ValueError("retry counter out of range")
        if _pin_block(self.pin) is None or _pin_block(self.puk) is None:
            raise ValueError("PIN and PUK must be 6-8 digits")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "guid": self.guid.hex(),
            "management_key": self.management_key.hex(),
            "pin": self.pin,
            "puk": self.puk,
            "pin_retries": self.pin_retries,
            "puk_retries": self.puk_retries,
            "card_key": None if self.card_key is None else self.card_key.hex(),
            "objects": {f"{tag:X}": value.hex() for tag, value in sorted(self.objects.items())},
        }

    @classmethod
    def from_json(cls, obj: object) -> PivCardState:
        """Raises ValueError if ``obj`` is not a state of this format and version."""
        if not isinstance(obj, dict):
            raise ValueError("state is not a JSON object")
        if obj.get("format") != STATE_FORMAT or obj.get("version") != STATE_VERSION:
            raise ValueError("unknown state format or version")
        try:
            card_key = obj["card_key"]
            return cls(
                guid=bytes.fromhex(obj["guid"]),
                management_key=bytes.fromhex(obj["management_key"]),
                pin=str(obj["pin"]),
                puk=str(obj["puk"]),
                pin_retries=int(obj["pin_retries"]),
                puk_retries=int(obj["puk_retries"]),
                card_key=None if card_key is None else bytes.fromhex(card_key),
                objects={int(t, 16): bytes.fromhex(v) for t, v in obj["objects"].items()},
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"invalid state: {exc!r}") from exc


def load_piv_state(path: Path) -> PivCardState:
    """Read the state at ``path``. Raises FileNotFoundError, OSError or ValueError."""
    raw = path.read_bytes()
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"state file {path} is not JSON") from exc
    return PivCardState.from_json(obj)


def save_piv_state(path: Path, state: PivCardState) -> None:
    """Atomically replace the file at ``path`` (mode 0600) with ``state``. Raises OSError."""
    payload = json.dumps(state.to_json(), sort_keys=True).encode()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- factory data objects ---------------------------------------------------------------------

_FASCN_SS, _FASCN_FS, _FASCN_ES = 0xB, 0xD, 0xF


def fasc_n(
    agency: str = "9999",
    system: str = "9999",
    credential: str = "999999",
    person: str = "0" * 10,
    organization_category: str = "3",
) -> bytes:
    """A 25-byte FASC-N (TIG SCEPACS: 5-bit BCD characters with odd parity, then an LRC).

    The defaults are the values of a non-federal issuer (agency, system and credential number
    all 9s, credential series 0, ICI 1, organizational category 3 "commercial"): such a card
    is identified by its GUID, as PIV-I and PIV-compatible cards are. Raises ValueError for a
    field of the wrong length.
    """
    fields = [agency, system, credential, "0", "1"]  # ..., credential series, ICI
    if [len(f) for f in fields] != [4, 4, 6, 1, 1] or len(person) != 10:
        raise ValueError("FASC-N field of the wrong length")
    if len(organization_category) != 1:
        raise ValueError("organizational category is one digit")
    chars = [_FASCN_SS]
    for index, part in enumerate(fields):
        if index:
            chars.append(_FASCN_FS)
        chars.extend(int(d) for d in part)
    chars.append(_FASCN_FS)
    tail = person + organization_category + "0000" + "1"  # PI, OC, OI, POA
    chars.extend(int(d) for d in tail)
    chars.append(_FASCN_ES)
    lrc = 0
    for value in chars:
        lrc ^= value
    chars.append(lrc)
    bits = ""
    for value in chars:
        data = "".join(str((value >> i) & 1) for i in range(4))  # b1 (LSB) first
        bits += data + ("0" if data.count("1") % 2 else "1")
    return int(bits, 2).to_bytes(25, "big")


def factory_objects(guid: bytes, expiration: str) -> dict[int, bytes]:
    """CHUID, CCC and Key History of a new card (contents inside their 53 containers)."""
    edc = Tlv(0xFE, b"")
    chuid = encode_all(
        [
            Tlv(0x30, fasc_n()),
            Tlv(0x34, guid),
            Tlv(0x35, expiration.encode("ascii")),
            Tlv(0x3E, b""),  # issuer signature: StarCard trusts the credential, not the CHUID
            edc,
        ]
    )
    card_identifier = bytes.fromhex("A000000116") + b"\xff\x00" + guid[:14]
    ccc = encode_all(
        [
            Tlv(0xF0, card_identifier),
            Tlv(0xF1, b"\x21"),
            Tlv(0xF2, b"\x21"),
            Tlv(0xF3, b""),
            Tlv(0xF4, b"\x00"),
            Tlv(0xF5, b"\x10"),
            Tlv(0xF6, b""),
            Tlv(0xF7, b""),
            Tlv(0xFA, b""),
            Tlv(0xFB, b""),
            Tlv(0xFC, b""),
            Tlv(0xFD, b""),
            edc,
        ]
    )
    history = encode_all([Tlv(0xC1, b"\x00"), Tlv(0xC2, b"\x00"), edc])
    return {ObjectTag.CHUID: chuid, ObjectTag.CCC: ccc, ObjectTag.KEY_HISTORY: history}


def _pin_block(pin: str) -> bytes | None:
    """``pin`` padded with FF to 8 bytes, or None if it is not 6-8 ASCII digits."""
    if not (6 <= len(pin) <= 8 and pin.isascii() and pin.isdigit()):
        return None
    return pin.encode("ascii").ljust(8, b"\xff")


def _pin_from_block(block: bytes) -> str | None:
    """The PIN in an 8-byte FF-padded block, or None if the block is malformed."""
    if len(block) != 8:
        return None
    text = block.rstrip(b"\xff")
    if not (6 <= len(text) <= 8 and all(0x30 <= b <= 0x39 for b in text)):
        return None
    return text.decode("ascii")


# -- the card -----------------------------------------------------------------------------------


class VirtualPivCard:
    """A PIV card with its state in ``state_path`` (or only in memory if None).

    A missing state file means a new card: random GUID, the factory objects, the default PIN,
    PUK and ``management_key``, no key in 9E; it is saved at once. An existing file is loaded
    (``management_key`` and ``expiration`` then do not matter). Raises ValueError for an
    invalid file, OSError if it cannot be read or written.
    """

    def __init__(
        self,
        state_path: Path | None = None,
        *,
        extended_length: bool = True,
        random_bytes: RandomBytes = secrets.token_bytes,
        management_key: bytes = DEFAULT_MANAGEMENT_KEY,
        expiration: str = DEFAULT_EXPIRATION,
    ) -> None:
        self._path = state_path
        self._random = random_bytes
        self._extended = extended_length
        loaded = None
        if state_path is not None:
            with contextlib.suppress(FileNotFoundError):
                loaded = load_piv_state(state_path)
        if loaded is None:
            guid = bytearray(random_bytes(16))
            guid[6] = (guid[6] & 0x0F) | 0x40  # RFC 4122 version 4
            guid[8] = (guid[8] & 0x3F) | 0x80
            loaded = PivCardState(
                bytes(guid), management_key, objects=factory_objects(bytes(guid), expiration)
            )
            self._save(loaded)
        self._state = loaded
        self._mgmt = AesManagementKey(loaded.management_key)
        self.reset()

    @property
    def atr(self) -> bytes:
        return PIV_ATR if self._extended else PIV_ATR_SHORT_ONLY

    @property
    def guid(self) -> bytes:
        return self._state.guid

    @property
    def state(self) -> PivCardState:
        return self._state

    def reset(self) -> None:
        """Power cycle / warm reset: deselect, forget security status, chains, pending data."""
        self._selected = False
        self._pin_verified = False
        self._admin = False
        self._witness: bytes | None = None
        self._challenge: bytes | None = None
        self._chain: tuple[tuple[int, int, int], bytes] | None = None
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

    # -- dispatch -----------------------------------------------------------------------------

    def _process(self, apdu: bytes) -> bytes:
        pending, self._pending = self._pending, b""
        try:
            cmd = parse_command(apdu)
        except MalformedApdu:
            raise _Refused(SW_WRONG_LENGTH) from None
        if cmd.extended and not self._extended:
            raise _Refused(SW_WRONG_LENGTH)
        chained = bool(cmd.cla & CLA_CHAINING)
        if cmd.cla & ~CLA_CHAINING != 0x00:
            raise _Refused(SW_CLA_UNKNOWN)
        if cmd.ins not in (INS_GENERAL_AUTHENTICATE, INS_GET_RESPONSE):
            self._witness = self._challenge = None  # a witness/challenge is single-use
        if cmd.ins == INS_GET_RESPONSE and not chained:
            self._chain = None
            return self._get_response(cmd, pending)
        handler = self._handlers().get(cmd.ins)
        if handler is None:
            raise _Refused(SW_INS_UNKNOWN)
        if not self._selected and cmd.ins != INS_SELECT:
            raise _Refused(SW_CONDITIONS)
        key = (cmd.ins, cmd.p1, cmd.p2)
        data = cmd.data
        if self._chain is not None:
            chain_key, buffered = self._chain
            self._chain = None
            if chain_key == key:
                data = buffered + data
        if len(data) > MAX_CHAINED_DATA:
            raise _Refused(SW_NO_MEMORY)
        if chained:
            if cmd.ins not in CHAINABLE:
                raise _Refused(SW_CHAINING_UNSUPPORTED)
            self._chain = (key, data)
            return _sw(SW_OK)
        return handler(replace(cmd, cla=0x00, data=data))

    def _handlers(self) -> dict[int, Callable[[ParsedCommand], bytes]]:
        return {
            INS_SELECT: self._select,
            INS_GET_DATA: self._get_data,
            INS_PUT_DATA: self._put_data,
            INS_GENERATE: self._generate,
            INS_GENERAL_AUTHENTICATE: self._general_authenticate,
            INS_VERIFY: self._verify,
            INS_CHANGE: self._change_reference,
            INS_RESET_RETRY: self._reset_retry_counter,
        }

    # -- response shaping ---------------------------------------------------------------------

    def _respond(self, cmd: ParsedCommand, data: bytes) -> bytes:
        """``data`` within Ne; the rest waits for GET RESPONSE (61xx). No Le: all waits."""
        if not data:
            return _sw(SW_OK)
        return self._chunk(data, cmd.ne or 0)

    def _chunk(self, data: bytes, ne: int) -> bytes:
        answer, self._pending = chunk_response(data, ne)
        return answer

    def _get_response(self, cmd: ParsedCommand, pending: bytes) -> bytes:
        answer, self._pending = continue_response(cmd, pending)
        return answer

    # -- SELECT, GET DATA, PUT DATA -----------------------------------------------------------

    def _select(self, cmd: ParsedCommand) -> bytes:
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x0C):
            raise _Refused(SW_WRONG_P1P2)
        if not (9 <= len(cmd.data) <= len(PIV_AID) and PIV_AID.startswith(cmd.data)):
            raise _Refused(SW_NOT_FOUND)  # the current selection stays (ISO 7816-4)
        self._selected = True
        if cmd.p2 == 0x0C:
            return _sw(SW_OK)
        algorithms = [Tlv(0x80, bytes([alg])) for alg in (self._mgmt.algorithm, 0x11)]
        apt = encode_tlv(
            0x61,
            encode_all(
                [
                    Tlv(0x4F, PIV_AID[5:]),
                    Tlv(0x79, encode_tlv(0x4F, PIV_AID[:5])),
                    Tlv(0x50, LABEL),
                    Tlv(0xAC, encode_all([*algorithms, Tlv(0x06, b"\x00")])),
                ]
            ),
        )
        return self._respond(cmd, apt)

    def _get_data(self, cmd: ParsedCommand) -> bytes:
        _require_data_object_p1p2(cmd)
        tag = _requested_tag(cmd.data)
        if tag == ObjectTag.DISCOVERY:
            policy = Tlv(0x5F2F, b"\x40\x00")  # PIV PIN only; no global PIN
            return self._respond(cmd, encode_tlv(0x7E, encode_all([Tlv(0x4F, PIV_AID), policy])))
        if tag in PIN_PROTECTED and not self._pin_verified:
            raise _Refused(SW_SECURITY)
        content = self._state.objects.get(tag)
        if content is None:
            raise _Refused(SW_NOT_FOUND)
        return self._respond(cmd, encode_tlv(0x53, content))

    def _put_data(self, cmd: ParsedCommand) -> bytes:
        _require_data_object_p1p2(cmd)
        if not self._admin:
            raise _Refused(SW_SECURITY)
        try:
            items = parse_all(cmd.data)
        except TlvError:
            raise _Refused(SW_WRONG_DATA) from None
        if [item.tag for item in items] != [0x5C, 0x53]:
            raise _Refused(SW_WRONG_DATA)
        tag_bytes, content = items[0].value, items[1].value
        if len(tag_bytes) != 3 or tag_bytes[0] != 0x5F:
            raise _Refused(SW_WRONG_DATA)  # only 5Fxxxx containers are writable (not 7E)
        if len(content) > MAX_OBJECT_SIZE:
            raise _Refused(SW_NO_MEMORY)
        objects = dict(self._state.objects)
        tag = int.from_bytes(tag_bytes, "big")
        if content:
            objects[tag] = content
        else:
            objects.pop(tag, None)
        self._commit(replace(self._state, objects=objects))
        return _sw(SW_OK)

    # -- keys ---------------------------------------------------------------------------------

    def _generate(self, cmd: ParsedCommand) -> bytes:
        if not self._admin:
            raise _Refused(SW_SECURITY)
        if cmd.p1 != 0x00 or cmd.p2 != KeyRef.CARD_AUTHENTICATION:
            raise _Refused(SW_WRONG_P1P2)  # this card only has the 9E slot
        try:
            control = parse_single(cmd.data)
            if control.tag != 0xAC:
                raise TlvError("no AC template")
            fields = control.children()
        except TlvError:
            raise _Refused(SW_WRONG_DATA) from None
        if [(f.tag, f.value) for f in fields] != [(0x80, bytes([Algorithm.ECC_P256]))]:
            raise _Refused(SW_WRONG_DATA)
        scalar = self._new_scalar()
        self._commit(replace(self._state, card_key=scalar))
        point = (
            _key(scalar)
            .public_key()
            .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        )
        return self._respond(cmd, encode_tlv(0x7F49, encode_tlv(0x86, point)))

    def _new_scalar(self) -> bytes:
        for _ in range(8):
            candidate = self._random(32)
            if len(candidate) == 32 and 0 < int.from_bytes(candidate, "big") < P256_ORDER:
                return candidate
        raise RuntimeError("random source gives no valid P-256 scalar")

    def _general_authenticate(self, cmd: ParsedCommand) -> bytes:
        try:
            template = parse_single(cmd.data)
            if template.tag != 0x7C:
                raise TlvError("no 7C template")
            items = {item.tag: item.value for item in template.children()}
            if len(items) != len(template.children()):
                raise TlvError("repeated tag")
        except TlvError:
            raise _Refused(SW_WRONG_DATA) from None
        if cmd.p2 == KeyRef.CARD_MANAGEMENT:
            return self._management(cmd, items)
        if cmd.p2 == KeyRef.CARD_AUTHENTICATION:
            return self._sign(cmd, items)
        if cmd.p2 in (KeyRef.PIV_AUTHENTICATION, KeyRef.DIGITAL_SIGNATURE, KeyRef.KEY_MANAGEMENT):
            raise _Refused(SW_DATA_NOT_FOUND)
        raise _Refused(SW_WRONG_P1P2)

    def _management(self, cmd: ParsedCommand, items: dict[int, bytes]) -> bytes:
        """9B: mutual (80 → 80+81 → 82) or card-challenges-host (81 → 82) authentication."""
        if cmd.p1 != self._mgmt.algorithm:
            raise _Refused(SW_WRONG_P1P2)
        size = self._mgmt.block_size
        witness, self._witness = self._witness, None
        challenge, self._challenge = self._challenge, None
        shape = {tag: len(value) for tag, value in items.items()}
        if shape == {0x80: 0}:
            self._admin = False
            self._witness = self._random(size)
            sealed = self._mgmt.encrypt_block(self._witness)
            return self._respond(cmd, encode_tlv(0x7C, encode_tlv(0x80, sealed)))
        if shape == {0x80: size, 0x81: size}:
            if witness is None or not hmac.compare_digest(items[0x80], witness):
                self._admin = False
                raise _Refused(SW_SECURITY)
            self._admin = True
            sealed = self._mgmt.encrypt_block(items[0x81])
            return self._respond(cmd, encode_tlv(0x7C, encode_tlv(0x82, sealed)))
        if shape == {0x81: 0}:
            self._admin = False
            self._challenge = self._random(size)
            return self._respond(cmd, encode_tlv(0x7C, encode_tlv(0x81, self._challenge)))
        if shape == {0x82: size}:
            expected = None if challenge is None else self._mgmt.encrypt_block(challenge)
            if expected is None or not hmac.compare_digest(items[0x82], expected):
                self._admin = False
                raise _Refused(SW_SECURITY)
            self._admin = True
            return _sw(SW_OK)
        raise _Refused(SW_WRONG_DATA)

    def _sign(self, cmd: ParsedCommand, items: dict[int, bytes]) -> bytes:
        """9E: ECDSA over the 32 bytes of tag 81, taken as a SHA-256 digest (no PIN needed)."""
        if cmd.p1 != Algorithm.ECC_P256:
            raise _Refused(SW_WRONG_P1P2)
        if self._state.card_key is None:
            raise _Refused(SW_DATA_NOT_FOUND)
        if {tag: len(value) for tag, value in items.items()} != {0x82: 0, 0x81: 32}:
            raise _Refused(SW_WRONG_DATA)
        algorithm = ec.ECDSA(utils.Prehashed(hashes.SHA256()), deterministic_signing=True)
        der = _key(self._state.card_key).sign(items[0x81], algorithm)
        return self._respond(cmd, encode_tlv(0x7C, encode_tlv(0x82, der)))

    # -- PIN and PUK --------------------------------------------------------------------------

    def _verify(self, cmd: ParsedCommand) -> bytes:
        if cmd.p1 not in (0x00, 0xFF) or cmd.p2 != PIN:
            raise _Refused(SW_WRONG_P1P2)
        if cmd.p1 == 0xFF:
            if cmd.data:
                raise _Refused(SW_WRONG_LENGTH)
            self._pin_verified = False
            return _sw(SW_OK)
        if not cmd.data:
            if self._pin_verified:
                return _sw(SW_OK)
            retries = self._state.pin_retries
            raise _Refused(0x63C0 | retries if retries else SW_BLOCKED)
        if self._state.pin_retries == 0:
            raise _Refused(SW_BLOCKED)
        pin = _pin_from_block(cmd.data)
        if pin is None:
            raise _Refused(SW_WRONG_DATA)
        self._pin_verified = self._check(PIN, pin)
        return _sw(SW_OK)

    def _change_reference(self, cmd: ParsedCommand) -> bytes:
        if cmd.p1 != 0x00 or cmd.p2 not in (PIN, PUK):
            raise _Refused(SW_WRONG_P1P2)
        if self._retries(cmd.p2) == 0:
            raise _Refused(SW_BLOCKED)
        old, new = _pin_from_block(cmd.data[:8]), _pin_from_block(cmd.data[8:])
        if len(cmd.data) != 16 or old is None or new is None:
            raise _Refused(SW_WRONG_DATA)
        self._check(cmd.p2, old)
        if cmd.p2 == PIN:
            self._commit(replace(self._state, pin=new))
        else:
            self._commit(replace(self._state, puk=new))
        return _sw(SW_OK)

    def _reset_retry_counter(self, cmd: ParsedCommand) -> bytes:
        if cmd.p1 != 0x00 or cmd.p2 != PIN:
            raise _Refused(SW_WRONG_P1P2)
        if self._state.puk_retries == 0:
            raise _Refused(SW_BLOCKED)
        puk, new_pin = _pin_from_block(cmd.data[:8]), _pin_from_block(cmd.data[8:])
        if len(cmd.data) != 16 or puk is None or new_pin is None:
            raise _Refused(SW_WRONG_DATA)
        self._check(PUK, puk)
        self._commit(replace(self._state, pin=new_pin, pin_retries=PIN_TRIES))
        return _sw(SW_OK)

    def _retries(self, reference: int) -> int:
        state = self._state
        return state.pin_retries if reference == PIN else state.puk_retries

    def _check(self, reference: int, candidate: str) -> bool:
        """Compare ``candidate`` with the PIN/PUK; count a failure (saved) and refuse 63Cx.

        On success the counter is reset to its maximum. Returns True or raises _Refused.
        """
        stored = self._state.pin if reference == PIN else self._state.puk
        maximum = PIN_TRIES if reference == PIN else PUK_TRIES
        if hmac.compare_digest(candidate.encode(), stored.encode()):
            if self._retries(reference) != maximum:
                self._commit(self._with_retries(reference, maximum))
            return True
        left = self._retries(reference) - 1
        self._commit(self._with_retries(reference, left))
        if reference == PIN:
            self._pin_verified = False
        raise _Refused(0x63C0 | left)

    def _with_retries(self, reference: int, retries: int) -> PivCardState:
        if reference == PIN:
            return replace(self._state, pin_retries=retries)
        return replace(self._state, puk_retries=retries)

    # -- state --------------------------------------------------------------------------------

    def _commit(self, state: PivCardState) -> None:
        """Save ``state`` first, then adopt it (a failed save raises, keeping the old one)."""
        self._save(state)
        self._state = state

    def _save(self, state: PivCardState) -> None:
        if self._path is not None:
            save_piv_state(self._path, state)


def _require_data_object_p1p2(cmd: ParsedCommand) -> None:
    if (cmd.p1, cmd.p2) != (0x3F, 0xFF):
        raise _Refused(SW_WRONG_P1P2)


def _requested_tag(data: bytes) -> int:
    """The tag named by the tag list ``5C`` of GET DATA. Refuses 6A80 if malformed."""
    try:
        item = parse_single(data)
    except TlvError:
        raise _Refused(SW_WRONG_DATA) from None
    if item.tag != 0x5C or not 1 <= len(item.value) <= 3:
        raise _Refused(SW_WRONG_DATA)
    return int.from_bytes(item.value, "big")


def _key(scalar: bytes) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())


# -- vpcd runner ----------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m card_profiles.virtual.piv_card",
        description="Insert a virtual PIV card into a vpcd reader slot.",
    )
    parser.add_argument("--port", type=int, default=35963, help="vpcd slot port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state", type=Path, required=True, help="card state (JSON) file")
    parser.add_argument(
        "--short-only", action="store_true", help="no extended length (ATR and commands)"
    )
    parser.add_argument("--management-key", help="AES key (hex) of a new card")
    parser.add_argument("--wait", type=float, default=20.0, help="seconds to wait for vpcd")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the card to vpcd. Exit 0 on SIGTERM/SIGINT or vpcd closing, 1 on error."""
    from card_profiles.virtual.vpcd import serve_until_signalled

    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s piv-card[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        key = bytes.fromhex(args.management_key) if args.management_key else None
        card = VirtualPivCard(
            args.state,
            extended_length=not args.short_only,
            management_key=key or DEFAULT_MANAGEMENT_KEY,
        )
    except (OSError, ValueError) as exc:
        log.error("cannot load card state %s: %s", args.state, exc)
        return 1
    log.info("PIV card %s on %s:%d", card.guid.hex(), args.host, args.port)
    return serve_until_signalled(card, args.host, args.port, args.wait)


if __name__ == "__main__":
    raise SystemExit(main())
