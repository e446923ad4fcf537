"""The ``piv`` profile (NIST SP 800-73-4) as data, and :class:`PivSession` on top of it.

A PIV card carries the StarCard card key in slot 9E (card authentication key: signing needs
no PIN, as SP 800-73-4 prescribes for 9E) and the StarCard credential in a PIV data object.
See docs/card-piv.md for the object choice, the wire format and the APDU counts.

Invariants:

* Callers get typed values or exceptions from :mod:`card_profiles.errors` (plus the PIV
  errors defined here); they never see a status word. 63Cx / 6983 on PIN commands become
  :class:`WrongPin` / :class:`PinBlocked` (:class:`WrongPuk` / :class:`PukBlocked` for the PUK).
* Short APDUs with command chaining (CLA 0x10) and 61xx GET RESPONSE are the default.
  Extended length is used only if the caller says so or the card's ATR advertises it (ISO/IEC
  7816-4 §8.1.1.2.7 card capabilities, compact-TLV tag 7, third byte bit 0x40; see
  :func:`atr_extended_length`).
* Every response is checked (strict BER-TLV, lengths, P-256 points, DER signatures) before a
  value is returned; a card answering 9000 with the wrong shape raises
  :class:`~card_profiles.errors.MalformedResponse`.
* ``apdu_count`` counts the APDUs handed to the transport. A tap (:meth:`PivSession.select`,
  :meth:`PivSession.read_credential`, :meth:`PivSession.internal_authenticate`) is 3 APDUs
  with extended length; short-only it is 3 plus one GET RESPONSE per further 256 bytes of
  credential object.
* The card signs the 32 bytes it is given as a *digest* (PIV GENERAL AUTHENTICATE: the host
  hashes). The session sends SHA-256(challenge), so the returned ``r ‖ s`` verifies as
  ECDSA-P256-SHA256 over the challenge itself, exactly like ``starcard-v1``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from card_profiles.apdu import EXTENDED_MAX_NE, ApduConnection, CommandApdu
from card_profiles.atr import atr_extended_length
from card_profiles.errors import (
    CardError,
    MalformedResponse,
    SecurityStatusNotSatisfied,
    StatusWordError,
)
from card_profiles.tlv import (
    Tlv,
    TlvError,
    encode_all,
    encode_tag,
    encode_tlv,
    parse_all,
    parse_single,
)
from card_profiles.transport import Transport

RandomBytes = Callable[[int], bytes]

# -- SP 800-73-4 constants (Part 1 data model, Part 2 card edge) ------------------------------

PIV_AID = bytes.fromhex("A000000308000010000100")
"""NIST RID A0 00 00 03 08, PIX 00 00 10 00 (PIV) and version 01 00."""


class KeyRef(IntEnum):
    """PIV key references (SP 800-73-4 Part 1, Table 4)."""

    PIV_AUTHENTICATION = 0x9A
    CARD_MANAGEMENT = 0x9B
    DIGITAL_SIGNATURE = 0x9C
    KEY_MANAGEMENT = 0x9D
    CARD_AUTHENTICATION = 0x9E


class Algorithm(IntEnum):
    """PIV cryptographic algorithm identifiers (SP 800-78-4, Table 6-2)."""

    TDES = 0x03
    RSA_1024 = 0x06
    RSA_2048 = 0x07
    AES_128 = 0x08
    AES_192 = 0x0A
    AES_256 = 0x0C
    ECC_P256 = 0x11
    ECC_P384 = 0x14


class ObjectTag(IntEnum):
    """BER-TLV tags of the PIV data objects used here (SP 800-73-4 Part 1, Table 3)."""

    CARD_AUTH_CERTIFICATE = 0x5FC101
    CHUID = 0x5FC102
    FINGERPRINTS = 0x5FC103
    PIV_AUTH_CERTIFICATE = 0x5FC105
    SECURITY_OBJECT = 0x5FC106
    CCC = 0x5FC107
    FACIAL_IMAGE = 0x5FC108
    PRINTED_INFORMATION = 0x5FC109
    SIGNATURE_CERTIFICATE = 0x5FC10A
    KEY_MANAGEMENT_CERTIFICATE = 0x5FC10B
    KEY_HISTORY = 0x5FC10C
    IRIS_IMAGES = 0x5FC121
    DISCOVERY = 0x7E


PIN_REF = 0x80
"""PIV Card Application PIN."""
PUK_REF = 0x81
"""PIN Unblocking Key."""
P1P2_DATA_OBJECT = (0x3F, 0xFF)
"""P1 P2 of GET DATA / PUT DATA: the current application's data objects."""

TAG_TAG_LIST = 0x5C
TAG_CONTAINER = 0x53
TAG_ERROR_DETECTION = 0xFE
TAG_APT = 0x61
TAG_APP_AID = 0x4F
TAG_AUTHORITY = 0x79
TAG_LABEL = 0x50
TAG_ALGORITHMS = 0xAC
TAG_ALGORITHM_ID = 0x80
TAG_DYNAMIC_AUTH = 0x7C
TAG_WITNESS = 0x80
TAG_CHALLENGE = 0x81
TAG_RESPONSE = 0x82
TAG_PUBLIC_KEY = 0x7F49
TAG_EC_POINT = 0x86
TAG_CERTIFICATE = 0x70
TAG_CERT_INFO = 0x71
TAG_FASCN = 0x30
TAG_GUID = 0x34
TAG_EXPIRATION = 0x35

SW_AUTH_BLOCKED = 0x6983
SW_VERIFY_FAILED = 0x63C0

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class PivProfile:
    """Wire-level description of a PIV card as StarCard uses it.

    ``credential_tag`` is the data object holding the StarCard credential, wrapped as
    ``53 {credential_inner_tag <credential>, FE 00}``. The other fields are SP 800-73-4 values;
    they are data so that a card model with a deviation needs a new profile, not a branch.
    """

    name: str
    aid: bytes
    cla: int
    ins_select: int
    ins_get_data: int
    ins_put_data: int
    ins_generate: int
    ins_general_authenticate: int
    ins_verify: int
    ins_change_reference: int
    ins_reset_retry_counter: int
    credential_tag: int
    credential_inner_tag: int
    card_key_ref: int
    card_key_algorithm: int
    management_key_ref: int
    pin_ref: int
    puk_ref: int
    pin_min_length: int
    pin_max_length: int
    pin_pad: int
    max_credential_size: int
    public_key_length: int
    challenge_length: int
    signature_length: int
    key_algorithm: str


STARCARD_CREDENTIAL_TAG = 0x5FFF53
"""Data object of the StarCard credential (see docs/card-piv.md for why this tag)."""

PIV = PivProfile(
    name="piv",
    aid=PIV_AID,
    cla=0x00,
    ins_select=0xA4,
    ins_get_data=0xCB,
    ins_put_data=0xDB,
    ins_generate=0x47,
    ins_general_authenticate=0x87,
    ins_verify=0x20,
    ins_change_reference=0x24,
    ins_reset_retry_counter=0x2C,
    credential_tag=STARCARD_CREDENTIAL_TAG,
    credential_inner_tag=0x80,
    card_key_ref=KeyRef.CARD_AUTHENTICATION,
    card_key_algorithm=Algorithm.ECC_P256,
    management_key_ref=KeyRef.CARD_MANAGEMENT,
    pin_ref=PIN_REF,
    puk_ref=PUK_REF,
    pin_min_length=6,
    pin_max_length=8,
    pin_pad=0xFF,
    max_credential_size=2048,
    public_key_length=65,
    challenge_length=32,
    signature_length=64,
    key_algorithm="ES256",
)

# -- errors -------------------------------------------------------------------------------------


class WrongPin(StatusWordError):
    """The card refused the PIN (SW 63Cx); ``retries`` are left (None if the card said 6300)."""

    MEANING = "wrong PIN"

    def __init__(self, sw: int, retries: int | None) -> None:
        super().__init__(sw)
        self.retries = retries
        left = "unknown" if retries is None else str(retries)
        self.args = (f"{self.MEANING}, {left} tries left (SW {sw:04X})",)


class WrongPuk(WrongPin):
    """The card refused the PUK (SW 63Cx)."""

    MEANING = "wrong PUK"


class PinBlocked(StatusWordError):
    """The PIN is blocked (SW 6983, or 63C0 on the try that blocked it); ``retries`` is 0."""

    SW = SW_AUTH_BLOCKED
    MEANING = "PIN blocked"

    def __init__(self, sw: int | None = None) -> None:
        super().__init__(sw)
        self.retries = 0


class PukBlocked(PinBlocked):
    """The PUK is blocked: the PIN can no longer be reset on this card."""

    MEANING = "PUK blocked"


class ManagementKeyRejected(SecurityStatusNotSatisfied):
    """The card did not accept our card management key (SW 6982 during GENERAL AUTHENTICATE)."""

    MEANING = "card management key rejected"


class CardAuthenticationFailed(CardError):
    """The card answered our management-key challenge wrongly: it does not hold that key."""


# -- card management key ----------------------------------------------------------------------


class ManagementKey(Protocol):
    """The card management key (9B) as a block cipher; an HSM-held key implements this."""

    @property
    def algorithm(self) -> int:
        """PIV algorithm identifier (P1 of GENERAL AUTHENTICATE)."""
        ...

    @property
    def block_size(self) -> int: ...

    def encrypt_block(self, block: bytes) -> bytes: ...

    def decrypt_block(self, block: bytes) -> bytes: ...


_AES_ALGORITHMS = {16: Algorithm.AES_128, 24: Algorithm.AES_192, 32: Algorithm.AES_256}


class AesManagementKey:
    """An AES-128/192/256 card management key held in memory (tests, the virtual card).

    Single-block ECB is what SP 800-73-4 GENERAL AUTHENTICATE specifies for the witness and
    the challenge (one random block each). Raises ValueError for another key length.
    """

    block_size = 16

    def __init__(self, key: bytes) -> None:
        if len(key) not in _AES_ALGORITHMS:
            raise ValueError("AES management key must be 16, 24 or 32 bytes")
        self._cipher = Cipher(algorithms.AES(bytes(key)), modes.ECB())  # noqa: S305
        self._algorithm = _AES_ALGORITHMS[len(key)]

    @property
    def algorithm(self) -> int:
        return int(self._algorithm)

    def encrypt_block(self, block: bytes) -> bytes:
        _require_block(block)
        encryptor = self._cipher.encryptor()
        return encryptor.update(block) + encryptor.finalize()

    def decrypt_block(self, block: bytes) -> bytes:
        _require_block(block)
        decryptor = self._cipher.decryptor()
        return decryptor.update(block) + decryptor.finalize()


def _require_block(block: bytes) -> None:
    if len(block) != AesManagementKey.block_size:
        raise ValueError("AES works on 16-byte blocks")


# -- parsed card data -------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplicationProperties:
    """The application property template (tag 61) answered to SELECT."""

    aid: bytes
    """Value of tag 4F: the PIX with version (or, on old cards, the full AID)."""
    authority: bytes | None
    label: str | None
    algorithms: tuple[int, ...]


@dataclass(frozen=True)
class Chuid:
    """The fields of the Card Holder Unique Identifier that StarCard reads."""

    fasc_n: bytes
    guid: bytes
    expiration: str
    """YYYYMMDD as stored on the card."""


@dataclass(frozen=True)
class PinStatus:
    """PIN state from VERIFY without data: verified now, else the tries left (0 = blocked)."""

    verified: bool
    retries: int | None


# -- the session ------------------------------------------------------------------------------


class PivSession:
    """StarCard's use of a PIV card application over ``transport``.

    ``extended_length`` forces the APDU form; if None it is read from ``atr``
    (:func:`atr_extended_length`), and without an ATR short APDUs are used. ``random_bytes``
    draws the host challenge of the management-key authentication (inject it for
    reproducible transcripts). The session does not own the transport. Raises ValueError for
    a profile whose card key is not ES256 on P-256.
    """

    has_card_key: ClassVar[bool] = True
    """The 9E card authentication key signs the challenge (clone protection)."""

    def __init__(
        self,
        transport: Transport,
        profile: PivProfile = PIV,
        *,
        atr: bytes | None = None,
        extended_length: bool | None = None,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        if profile.key_algorithm != "ES256" or profile.card_key_algorithm != Algorithm.ECC_P256:
            raise ValueError("only ES256 card keys (PIV algorithm 11) are supported")
        if extended_length is None:
            extended_length = atr is not None and atr_extended_length(atr)
        self._profile = profile
        self._random = random_bytes
        self._conn = ApduConnection(transport, extended_length=extended_length)

    @property
    def profile(self) -> PivProfile:
        return self._profile

    @property
    def extended_length(self) -> bool:
        return self._conn.extended_length

    @property
    def apdu_count(self) -> int:
        """APDUs actually sent so far (GET RESPONSE and chain parts included)."""
        return self._conn.apdu_count

    # -- tap ----------------------------------------------------------------------------------

    def select(self) -> ApplicationProperties:
        """SELECT the PIV application. Raises NotFound; MalformedResponse if it is not PIV."""
        p = self._profile
        data = self._conn.send(CommandApdu(p.cla, p.ins_select, 0x04, 0x00, p.aid, le=0))
        try:
            apt = parse_single(data)
            if apt.tag != TAG_APT:
                raise TlvError(f"tag {apt.tag:X} instead of the application property template")
            fields = {item.tag: item for item in apt.children()}
            aid = fields[TAG_APP_AID].value
            authority = fields.get(TAG_AUTHORITY)
            algorithms = fields.get(TAG_ALGORITHMS)
            authority_aid = _child(authority, TAG_APP_AID) if authority else None
            algorithm_ids = tuple(
                item.value[0]
                for item in (algorithms.children() if algorithms else [])
                if item.tag == TAG_ALGORITHM_ID and len(item.value) == 1
            )
            label = (
                fields[TAG_LABEL].value.decode("utf-8", "replace") if TAG_LABEL in fields else None
            )
        except (TlvError, KeyError) as exc:
            raise MalformedResponse(f"SELECT answer is not a PIV APT: {exc}") from exc
        if aid[:4] != p.aid[5:9] and aid[:9] != p.aid[:9]:
            raise MalformedResponse(f"application {aid.hex()} is not PIV")
        return ApplicationProperties(aid, authority_aid, label, algorithm_ids)

    def read_credential(self) -> bytes:
        """The StarCard credential. Raises NotFound if the card has none."""
        p = self._profile
        content = self.get_object(p.credential_tag)
        credential = _find_value(content, p.credential_inner_tag, "credential object")
        if not credential or len(credential) > p.max_credential_size:
            raise MalformedResponse(f"credential of {len(credential)} bytes")
        return credential

    def internal_authenticate(self, challenge: bytes) -> bytes:
        """Sign ``challenge`` with the card key; return ``r ‖ s`` (64 bytes).

        PIV signs a digest supplied by the host, so the card is sent SHA-256(challenge) and
        the result verifies as ECDSA P-256 with SHA-256 over ``challenge``. Raises ValueError
        if the challenge length is not ``profile.challenge_length``; DataNotFound if the card
        has no key in the slot.
        """
        p = self._profile
        if len(challenge) != p.challenge_length:
            raise ValueError(f"challenge must be {p.challenge_length} bytes")
        digest = hashlib.sha256(challenge).digest()
        template = encode_tlv(
            TAG_DYNAMIC_AUTH, encode_tlv(TAG_RESPONSE, b"") + encode_tlv(TAG_CHALLENGE, digest)
        )
        command = CommandApdu(
            p.cla, p.ins_general_authenticate, p.card_key_algorithm, p.card_key_ref, template, le=0
        )
        answer = self._conn.send(command)
        der = _find_value(_dynamic_auth(answer), TAG_RESPONSE, "signature")
        return _raw_signature(der, p.signature_length)

    # -- personalization ----------------------------------------------------------------------

    def authenticate_management_key(self, key: ManagementKey) -> None:
        """Mutual authentication with the card management key (SP 800-73-4 Part 2, App. A).

        The card sends an encrypted witness; we return it decrypted together with our own
        challenge, which the card must encrypt. Raises ManagementKeyRejected if the card does
        not accept ``key``; CardAuthenticationFailed if the card's answer shows it does not
        hold ``key``.
        """
        p = self._profile
        size = key.block_size
        request = encode_tlv(TAG_DYNAMIC_AUTH, encode_tlv(TAG_WITNESS, b""))
        answer = self._management_step(key, request)
        encrypted_witness = _find_value(_dynamic_auth(answer), TAG_WITNESS, "witness")
        if len(encrypted_witness) != size:
            raise MalformedResponse(f"witness of {len(encrypted_witness)} bytes")
        challenge = self._random(size)
        if len(challenge) != size:
            raise ValueError("random_bytes returned the wrong length")
        reply = encode_tlv(
            TAG_DYNAMIC_AUTH,
            encode_tlv(TAG_WITNESS, key.decrypt_block(encrypted_witness))
            + encode_tlv(TAG_CHALLENGE, challenge),
        )
        answer = self._management_step(key, reply)
        response = _find_value(_dynamic_auth(answer), TAG_RESPONSE, "response")
        if not hmac.compare_digest(response, key.encrypt_block(challenge)):
            raise CardAuthenticationFailed(
                f"card failed the challenge of management key {p.management_key_ref:02X}"
            )

    def _management_step(self, key: ManagementKey, template: bytes) -> bytes:
        p = self._profile
        command = CommandApdu(
            p.cla, p.ins_general_authenticate, key.algorithm, p.management_key_ref, template, le=0
        )
        try:
            return self._conn.send(command)
        except SecurityStatusNotSatisfied as exc:
            raise ManagementKeyRejected(exc.sw) from exc

    def generate_card_key(self) -> bytes:
        """Generate the P-256 card key in the card slot; return its uncompressed point.

        Needs a prior :meth:`authenticate_management_key` (else SecurityStatusNotSatisfied).
        Replaces any key in the slot; the credential and certificate of the old key stay
        until overwritten.
        """
        p = self._profile
        control = encode_tlv(
            TAG_ALGORITHMS, encode_tlv(TAG_ALGORITHM_ID, bytes([p.card_key_algorithm]))
        )
        answer = self._conn.send(
            CommandApdu(p.cla, p.ins_generate, 0x00, p.card_key_ref, control, le=0)
        )
        try:
            template = parse_single(answer)
            if template.tag != TAG_PUBLIC_KEY:
                raise TlvError(f"tag {template.tag:X} instead of 7F49")
            point = _child(template, TAG_EC_POINT)
        except (TlvError, KeyError) as exc:
            raise MalformedResponse(f"GENERATE answer: {exc}") from exc
        return _check_point(point, p.public_key_length)

    def write_credential(self, credential: bytes) -> None:
        """Store ``credential`` in the credential object (PUT DATA replaces it whole).

        Raises ValueError for an empty or too large credential (nothing is sent);
        SecurityStatusNotSatisfied without management-key authentication.
        """
        p = self._profile
        if not credential or len(credential) > p.max_credential_size:
            raise ValueError(f"credential must be 1..{p.max_credential_size} bytes")
        self.put_object(p.credential_tag, _container([Tlv(p.credential_inner_tag, credential)]))

    def write_certificate(self, tag: int, certificate_der: bytes) -> None:
        """Store an X.509 certificate (DER, uncompressed) in certificate object ``tag``."""
        if not certificate_der:
            raise ValueError("empty certificate")
        items = [Tlv(TAG_CERTIFICATE, certificate_der), Tlv(TAG_CERT_INFO, b"\x00")]
        self.put_object(tag, _container(items))

    def read_certificate(self, tag: int) -> bytes:
        """The DER certificate in object ``tag``. Raises NotFound if absent."""
        return _find_value(self.get_object(tag), TAG_CERTIFICATE, "certificate object")

    def read_chuid(self) -> Chuid:
        """The CHUID's FASC-N, GUID and expiration date. Raises NotFound if absent."""
        content = self.get_object(ObjectTag.CHUID)
        fasc_n = _find_value(content, TAG_FASCN, "CHUID")
        guid = _find_value(content, TAG_GUID, "CHUID")
        try:
            expiration = _find_value(content, TAG_EXPIRATION, "CHUID").decode("ascii")
        except UnicodeDecodeError as exc:
            raise MalformedResponse("CHUID expiration date is not ASCII") from exc
        if len(fasc_n) != 25 or len(guid) != 16 or len(expiration) != 8:
            raise MalformedResponse("CHUID field of the wrong length")
        return Chuid(fasc_n, guid, expiration)

    def get_object(self, tag: int) -> bytes:
        """GET DATA: the content of data object ``tag`` (inside its ``53`` container).

        Raises NotFound if the card has no such object, SecurityStatusNotSatisfied if it
        needs the PIN, MalformedResponse if the answer is not a ``53`` container.
        """
        p = self._profile
        request = encode_tlv(TAG_TAG_LIST, encode_tag(tag))
        p1, p2 = P1P2_DATA_OBJECT
        command = CommandApdu(p.cla, p.ins_get_data, p1, p2, request, le=EXTENDED_MAX_NE)
        answer = self._conn.send(command)
        try:
            container = parse_single(answer)
        except TlvError as exc:
            raise MalformedResponse(f"GET DATA {tag:X}: {exc}") from exc
        if container.tag != TAG_CONTAINER:
            raise MalformedResponse(f"GET DATA {tag:X}: tag {container.tag:X} instead of 53")
        return container.value

    def put_object(self, tag: int, content: bytes) -> None:
        """PUT DATA: replace data object ``tag`` with ``53 {content}`` (empty deletes it).

        Raises SecurityStatusNotSatisfied without management-key authentication, NotEnoughMemory
        if the card has no room.
        """
        p = self._profile
        data = encode_tlv(TAG_TAG_LIST, encode_tag(tag)) + encode_tlv(TAG_CONTAINER, content)
        p1, p2 = P1P2_DATA_OBJECT
        self._conn.send(CommandApdu(p.cla, p.ins_put_data, p1, p2, data))

    # -- PIN ------------------------------------------------------------------------------------

    def verify_pin(self, pin: str) -> None:
        """VERIFY the PIV PIN. Raises ValueError (format), WrongPin, PinBlocked."""
        p = self._profile
        command = CommandApdu(p.cla, p.ins_verify, 0x00, p.pin_ref, self._encode_pin(pin))
        self._pin_command(command, puk=False)

    def pin_status(self) -> PinStatus:
        """VERIFY without data: is the PIN verified now, and how many tries are left."""
        p = self._profile
        try:
            self._conn.send(CommandApdu(p.cla, p.ins_verify, 0x00, p.pin_ref))
        except StatusWordError as exc:
            mapped = _pin_error(exc, puk=False)
            if isinstance(mapped, PinBlocked):
                return PinStatus(False, 0)
            if isinstance(mapped, WrongPin):
                return PinStatus(False, mapped.retries)
            raise
        return PinStatus(True, None)

    def change_pin(self, old_pin: str, new_pin: str) -> None:
        """CHANGE REFERENCE DATA of the PIN. Raises ValueError, WrongPin, PinBlocked."""
        p = self._profile
        data = self._encode_pin(old_pin) + self._encode_pin(new_pin)
        command = CommandApdu(p.cla, p.ins_change_reference, 0x00, p.pin_ref, data)
        self._pin_command(command, puk=False)

    def unblock_pin(self, puk: str, new_pin: str) -> None:
        """RESET RETRY COUNTER: set a new PIN with the PUK. Raises WrongPuk, PukBlocked."""
        p = self._profile
        data = self._encode_pin(puk) + self._encode_pin(new_pin)
        command = CommandApdu(p.cla, p.ins_reset_retry_counter, 0x00, p.pin_ref, data)
        self._pin_command(command, puk=True)

    def _pin_command(self, command: CommandApdu, *, puk: bool) -> None:
        try:
            self._conn.send(command)
        except StatusWordError as exc:
            mapped = _pin_error(exc, puk=puk)
            if mapped is exc:
                raise
            raise mapped from exc

    def _encode_pin(self, pin: str) -> bytes:
        """PIN/PUK as PIV wants it: 6–8 ASCII digits padded with FF to 8 bytes."""
        p = self._profile
        if not (p.pin_min_length <= len(pin) <= p.pin_max_length) or not (
            pin.isascii() and pin.isdigit()
        ):
            raise ValueError(f"PIN must be {p.pin_min_length}-{p.pin_max_length} digits")
        return pin.encode("ascii").ljust(p.pin_max_length, bytes([p.pin_pad]))


def _pin_error(exc: StatusWordError, *, puk: bool) -> StatusWordError:
    """The PIN error for ``exc`` (63Cx, 6300, 6983), or ``exc`` itself for anything else."""
    sw = exc.sw
    if sw in (SW_AUTH_BLOCKED, SW_VERIFY_FAILED):
        return PukBlocked(sw) if puk else PinBlocked(sw)
    wrong = WrongPuk if puk else WrongPin
    if sw & 0xFFF0 == SW_VERIFY_FAILED:
        return wrong(sw, sw & 0x0F)
    if sw == 0x6300:
        return wrong(sw, None)
    return exc


def _container(items: list[Tlv]) -> bytes:
    """Content of a PIV container: ``items`` then the empty error detection code FE 00."""
    return encode_all([*items, Tlv(TAG_ERROR_DETECTION, b"")])


def _dynamic_auth(answer: bytes) -> bytes:
    """The content of the dynamic authentication template (7C) in ``answer``."""
    try:
        template = parse_single(answer)
    except TlvError as exc:
        raise MalformedResponse(f"GENERAL AUTHENTICATE answer: {exc}") from exc
    if template.tag != TAG_DYNAMIC_AUTH:
        raise MalformedResponse(f"tag {template.tag:X} instead of 7C")
    return template.value


def _find_value(content: bytes, tag: int, what: str) -> bytes:
    """The value of ``tag`` among the TLVs of ``content``; MalformedResponse if absent."""
    try:
        for item in parse_all(content):
            if item.tag == tag:
                return item.value
    except TlvError as exc:
        raise MalformedResponse(f"{what}: {exc}") from exc
    raise MalformedResponse(f"{what}: no tag {tag:X}")


def _child(template: Tlv, tag: int) -> bytes:
    for item in template.children():
        if item.tag == tag:
            return item.value
    raise KeyError(f"no tag {tag:X} in {template.tag:X}")


def _check_point(point: bytes, length: int) -> bytes:
    """Require an uncompressed SEC1 point of ``length`` bytes on P-256."""
    if len(point) != length or point[0] != 0x04:
        raise MalformedResponse("public key is not an uncompressed P-256 point")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise MalformedResponse("public key is not a valid P-256 point") from exc
    return point


def _raw_signature(der: bytes, length: int) -> bytes:
    """DER ECDSA-Sig-Value → fixed-length ``r ‖ s``; MalformedResponse if not strict DER."""
    try:
        r, s = utils.decode_dss_signature(der)
    except ValueError as exc:
        raise MalformedResponse("signature is not a DER ECDSA-Sig-Value") from exc
    half = length // 2
    if not (0 < r < P256_ORDER and 0 < s < P256_ORDER):
        raise MalformedResponse("signature values out of range")
    if utils.encode_dss_signature(r, s) != der:
        raise MalformedResponse("signature is not in DER (canonical) form")
    return r.to_bytes(half, "big") + s.to_bytes(half, "big")
