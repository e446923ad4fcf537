"""Session with a plain ISO/IEC 7816-4 file-system card (profile family ``iso7816-fs``).

The credential lives in a transparent elementary file (EF), behind a 2-byte big-endian
length prefix::

    offset 0      2                     2 + n          EF size
           | n (BE) | credential (n bytes) | stale bytes ... |

There is no card key: such a card cannot answer a challenge, so anyone who reads the EF can
make a perfect copy. :attr:`Iso7816FsSession.has_card_key` is False and
:meth:`Iso7816FsSession.internal_authenticate` raises :class:`CardKeyNotSupported`; a verifier
must report such a card as *lower assurance* (no clone protection) and leave acceptance to
policy. The full description (commands, status words, layout, the rule) is in
``docs/card-iso7816-fs.md``.

Why a length prefix and not the EF size from the FCP: the EF may be larger than the
credential (it is created for the largest one), and vsmartcard's ``vicc`` crashes on SELECT
with FCP/FCI in its Debian build, so every SELECT here uses P2 = ``0C`` (no response data).

Invariants:

* Profiles are data (:class:`Iso7816FsProfile`); the session code is the same for every card
  of the family. Every command uses only ISO 7816-4 instructions: SELECT (``A4``, P2 ``0C``),
  READ BINARY (``B0``), UPDATE BINARY (``D6``), CREATE FILE (``E0``, ISO 7816-9).
* Callers get bytes or a :mod:`card_profiles.errors` exception, never a status word.
* A credential read is at most ``2 + max_credential_size`` bytes; every READ BINARY asks for
  at most ``max_read_chunk`` bytes and a card answering with more, or with nothing, raises
  :class:`~card_profiles.errors.MalformedResponse`; every further READ BINARY must bring at
  least one byte, so a read sends at most ``4 + max_credential_size`` READ BINARY commands
  whatever the card answers (``ceil((2 + n) / max_read_chunk)`` for an n-byte credential on a
  well-behaved card); the APDU layer may resend each once (6Cxx) or follow it with GET
  RESPONSE (61xx).
* A write is torn-safe at the level of the length prefix: the first UPDATE BINARY sets the
  length to 0, the body follows, the real length is written last, and the result is read
  back and compared. A write interrupted part-way leaves a card that reads as "no
  credential" (:class:`CredentialAbsent`), never as a mix of two credentials — provided the
  card writes the two length bytes of one UPDATE BINARY atomically (true of page-based
  EEPROM/flash COS; vicc keeps everything in RAM).
* ``apdu_count`` counts APDUs actually sent (GET RESPONSE and 6Cxx resends included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from card_profiles.apdu import SHORT_MAX_NC, SHORT_MAX_NE, ApduConnection, CommandApdu
from card_profiles.errors import (
    CardError,
    CardIOError,
    MalformedResponse,
    NotFound,
    StatusWordError,
)
from card_profiles.tlv import TlvError, encode_tlv, parse_all
from card_profiles.transport import Transport

__all__ = [
    "ISO7816_FS",
    "ISO7816_FS_MF",
    "ISO7816_FS_PROFILES",
    "LENGTH_PREFIX_SIZE",
    "CardKeyNotSupported",
    "CredentialAbsent",
    "Iso7816FsProfile",
    "Iso7816FsSession",
    "WriteVerificationFailed",
]

LENGTH_PREFIX_SIZE = 2
MAX_OFFSET = 0x7FFF
"""READ/UPDATE BINARY with even INS and P1 bit 8 = 0 carry a 15-bit offset."""

INS_SELECT = 0xA4
INS_READ_BINARY = 0xB0
INS_UPDATE_BINARY = 0xD6
INS_CREATE_FILE = 0xE0
SELECT_MF_OR_FID = 0x00
SELECT_CHILD_EF = 0x02
SELECT_DF_NAME = 0x04
SELECT_PATH_FROM_MF = 0x08
SELECT_NO_RESPONSE_DATA = 0x0C
FID_MF = 0x3F00
P1_SFI = 0x80

TAG_FCP = 0x62
TAG_FILE_SIZE = 0x80
TAG_FILE_DESCRIPTOR = 0x82
TAG_FILE_ID = 0x83
TAG_DF_NAME = 0x84
TAG_SFI = 0x88
FDB_DF = 0x38
FDB_TRANSPARENT_EF = 0x01
_SESSION_FCP_TAGS = frozenset({TAG_FILE_SIZE, TAG_FILE_DESCRIPTOR, TAG_FILE_ID, TAG_DF_NAME})

SW_EOF_BEFORE_NE = 0x6282
SW_WRONG_LENGTH = 0x6700
SW_OFFSET_OUTSIDE_EF = 0x6B00
_SHORT_FILE_SWS = frozenset({SW_EOF_BEFORE_NE, SW_WRONG_LENGTH, SW_OFFSET_OUTSIDE_EF})
"""Answers to a READ BINARY that asked for more than the EF holds from that offset."""
_ERASED_LENGTHS = frozenset({0x0000, 0xFFFF})
_RESERVED_FIDS = frozenset({FID_MF, 0x3FFF, 0xFFFF})


class CardKeyNotSupported(CardError):
    """The profile has no card key: no INTERNAL AUTHENTICATE, hence no clone protection.

    Raised before anything is sent to the card. Not a status word error: the card was never
    asked.
    """


class CredentialAbsent(NotFound):
    """The credential EF exists but holds no credential (length prefix 0000 or FFFF).

    A :class:`~card_profiles.errors.NotFound`, as for a card answering 6A82, so callers
    handle "no credential" alike for every profile; ``sw`` is that nominal 6A82.
    """


class WriteVerificationFailed(CardIOError):
    """The credential read back after a write differs from what was written."""


@dataclass(frozen=True)
class Iso7816FsProfile:
    """Where and how a family of ISO 7816-4 file-system cards keeps the credential.

    * ``df_aid``: the DF name (AID, 5..16 bytes) of the application DF holding the EF, selected
      with SELECT by DF name; ``None``: the EF sits directly under the MF.
    * ``df_fid``: the file identifier given to that DF when the session creates it.
    * ``ef_fid``: the credential EF's file identifier; ``ef_sfi``: its short EF identifier
      (1..30) or ``None``. With an SFI the first READ BINARY names the EF itself, which saves
      the SELECT of the EF on every tap.
    * ``max_read_chunk`` (2..256) / ``max_write_chunk`` (2..255): the most data bytes one
      READ / UPDATE BINARY carries (short APDUs only).
    * ``max_credential_size``: largest credential; ``ef_size``: size put in CREATE FILE
      (at least ``2 + max_credential_size``).
    * ``update_with_le``: append ``Le = 00`` to UPDATE BINARY (vicc crashes without it);
      ``update_warnings``: warning status words (62xx/63xx only) accepted from UPDATE BINARY
      besides 9000 (vicc answers 6282 to an UPDATE carrying Le). Writes are always read back.
    * ``ef_fcp_extra``: further BER-TLVs appended to the EF's FCP in CREATE FILE (e.g. security
      attributes a real card needs); must not repeat the tags the session sets itself.

    Raises ValueError on construction if any field is out of range.
    """

    name: str
    df_aid: bytes | None
    df_fid: int
    ef_fid: int
    ef_sfi: int | None
    max_read_chunk: int
    max_write_chunk: int
    max_credential_size: int
    ef_size: int
    update_with_le: bool
    update_warnings: tuple[int, ...]
    ef_fcp_extra: bytes = b""
    cla: int = 0x00

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("profile needs a name")
        if self.df_aid is not None and not 5 <= len(self.df_aid) <= 16:
            raise ValueError("df_aid must be 5..16 bytes")
        for label, fid in (("df_fid", self.df_fid), ("ef_fid", self.ef_fid)):
            if not 0 <= fid <= 0xFFFF or fid in _RESERVED_FIDS:
                raise ValueError(f"{label} {fid:#x} is not a usable file identifier")
        if self.df_aid is not None and self.df_fid == self.ef_fid:
            raise ValueError("df_fid and ef_fid must differ")
        if self.ef_sfi is not None and not 1 <= self.ef_sfi <= 30:
            raise ValueError("ef_sfi must be 1..30")
        if not LENGTH_PREFIX_SIZE <= self.max_read_chunk <= SHORT_MAX_NE:
            raise ValueError(f"max_read_chunk must be {LENGTH_PREFIX_SIZE}..{SHORT_MAX_NE}")
        if not LENGTH_PREFIX_SIZE <= self.max_write_chunk <= SHORT_MAX_NC:
            raise ValueError(f"max_write_chunk must be {LENGTH_PREFIX_SIZE}..{SHORT_MAX_NC}")
        if not 1 <= self.max_credential_size <= MAX_OFFSET + 1 - LENGTH_PREFIX_SIZE:
            raise ValueError("max_credential_size out of range")
        if not LENGTH_PREFIX_SIZE + self.max_credential_size <= self.ef_size <= MAX_OFFSET + 1:
            raise ValueError("ef_size must hold the length prefix and the largest credential")
        for sw in self.update_warnings:
            if not 0x6200 <= sw <= 0x63FF:
                raise ValueError(f"only warnings (62xx/63xx) may be tolerated, not {sw:04X}")
        try:
            extra = parse_all(self.ef_fcp_extra)
        except TlvError as exc:
            raise ValueError(f"ef_fcp_extra is not BER-TLV: {exc}") from exc
        if any(item.tag in _SESSION_FCP_TAGS | {TAG_SFI} for item in extra):
            raise ValueError("ef_fcp_extra repeats a tag the session sets itself")
        if not 0 <= self.cla <= 0xFE or self.cla & 0x10:
            raise ValueError("cla must be an interindustry class without chaining")


ISO7816_FS = Iso7816FsProfile(
    name="iso7816-fs",
    df_aid=b"\xf0STARCARDFS",
    df_fid=0xDF01,
    ef_fid=0xC001,
    ef_sfi=0x01,
    max_read_chunk=256,
    max_write_chunk=255,
    max_credential_size=2048,
    ef_size=LENGTH_PREFIX_SIZE + 2048,
    update_with_le=True,
    update_warnings=(SW_EOF_BEFORE_NE,),
)
"""Default: EF C001 (SFI 1) in a StarCard DF ``F0 'STARCARDFS'``; a tap is SELECT + READs."""

ISO7816_FS_MF = Iso7816FsProfile(
    name="iso7816-fs-mf",
    df_aid=None,
    df_fid=0xDF01,
    ef_fid=0xC001,
    ef_sfi=None,
    max_read_chunk=256,
    max_write_chunk=255,
    max_credential_size=2048,
    ef_size=LENGTH_PREFIX_SIZE + 2048,
    update_with_le=True,
    update_warnings=(SW_EOF_BEFORE_NE,),
)
"""EF C001 directly under the MF, selected by path; for cards without application DFs."""

ISO7816_FS_PROFILES: dict[str, Iso7816FsProfile] = {p.name: p for p in (ISO7816_FS, ISO7816_FS_MF)}


class Iso7816FsSession:
    """The credential commands of ``profile`` over ``transport``.

    The session does not own the transport (closing it is the caller's job). Short APDUs
    only. Raises, besides what each method names: CardIOError / CardRemoved / CardTimeout
    from the transport, StatusWordError subclasses for refusals it has no better name for.
    """

    has_card_key: ClassVar[bool] = False
    """No on-card key: verifiers must report this card as lower assurance (no clone
    protection); whether it is accepted is a policy decision."""

    def __init__(self, transport: Transport, profile: Iso7816FsProfile = ISO7816_FS) -> None:
        self._profile = profile
        self._conn = ApduConnection(transport, extended_length=False)

    @property
    def profile(self) -> Iso7816FsProfile:
        return self._profile

    @property
    def apdu_count(self) -> int:
        """APDUs actually sent so far (GET RESPONSE and resends included)."""
        return self._conn.apdu_count

    # -- tap ----------------------------------------------------------------------------

    def select(self) -> None:
        """Make the credential EF readable: 1 APDU, or 2 with a DF and no SFI.

        With a DF: SELECT by DF name (then the EF by file id if the profile has no SFI).
        Without: SELECT the EF by path from the MF (or the MF itself if there is an SFI).
        Raises NotFound if the DF or EF does not exist.
        """
        p = self._profile
        if p.df_aid is not None:
            self._select_df()
            if p.ef_sfi is None:
                self._select(SELECT_CHILD_EF, _fid(p.ef_fid))
        elif p.ef_sfi is None:
            self._select(SELECT_PATH_FROM_MF, _fid(p.ef_fid))
        else:
            self._select_mf()

    def read_credential(self) -> bytes:
        """Read the credential after :meth:`select` (READ BINARY in chunks).

        The first READ BINARY asks for ``max_read_chunk`` bytes (by SFI if the profile has
        one); if the EF is shorter than that, the card's "end of file" answer is followed by
        an exact 2-byte read. Then the rest is read with exact Le. A 300-byte credential takes
        2 READ BINARYs with 256-byte chunks.

        Raises CredentialAbsent (length 0000/FFFF), NotFound (no EF),
        MalformedResponse (length above ``max_credential_size``, EF shorter than its length
        prefix says, a card returning more than asked or no data).
        """
        p = self._profile
        first_le = min(p.max_read_chunk, LENGTH_PREFIX_SIZE + p.max_credential_size)
        try:
            head = self._read(0, first_le, first=True)
        except StatusWordError as exc:
            if exc.sw not in _SHORT_FILE_SWS:
                raise
            try:
                head = self._read(0, LENGTH_PREFIX_SIZE, first=True)
            except StatusWordError as inner:
                if inner.sw not in _SHORT_FILE_SWS:
                    raise
                raise MalformedResponse("EF is shorter than the length prefix") from inner
        if len(head) < LENGTH_PREFIX_SIZE:
            raise MalformedResponse(f"EF answered {len(head)} bytes, no length prefix")
        length = int.from_bytes(head[:LENGTH_PREFIX_SIZE], "big")
        if length in _ERASED_LENGTHS:
            raise CredentialAbsent()
        if length > p.max_credential_size:
            raise MalformedResponse(f"length prefix {length} exceeds {p.max_credential_size} bytes")
        total = LENGTH_PREFIX_SIZE + length
        blob = bytearray(head[:total])
        while len(blob) < total:
            le = min(p.max_read_chunk, total - len(blob))
            try:
                chunk = self._read(len(blob), le, first=False)
            except StatusWordError as exc:
                if exc.sw not in _SHORT_FILE_SWS:
                    raise
                raise MalformedResponse(
                    f"EF ends before the {length} bytes its length prefix announces"
                ) from exc
            if not chunk:
                raise MalformedResponse("READ BINARY returned no data")
            blob += chunk
        return bytes(blob[LENGTH_PREFIX_SIZE:])

    def internal_authenticate(self, challenge: bytes) -> bytes:
        """Always raises CardKeyNotSupported: this card family has no key (no APDU is sent)."""
        raise CardKeyNotSupported(
            f"profile {self._profile.name} has no card key: the card cannot prove it is not a clone"
        )

    # -- personalization ------------------------------------------------------------------

    def write_credential(self, data: bytes) -> None:
        """Store ``data`` as the credential, creating the DF and EF if they are missing.

        Sequence: select (or CREATE FILE, then select) the DF and the EF; UPDATE BINARY of
        ``00 00`` + ``data`` in ``max_write_chunk`` pieces; UPDATE BINARY of the real length
        at offset 0; read back and compare. Raises ValueError for empty data or data above
        ``max_credential_size`` (nothing sent); WriteVerificationFailed if the read-back
        differs; StatusWordError subclasses if the card refuses (e.g. SecurityStatusNotSatisfied
        for an EF whose access rule forbids updates).
        """
        p = self._profile
        if not data:
            raise ValueError("credential must not be empty")
        if len(data) > p.max_credential_size:
            raise ValueError(f"credential of {len(data)} bytes exceeds {p.max_credential_size}")
        data = bytes(data)
        self._select_or_create_ef()
        blob = bytes(LENGTH_PREFIX_SIZE) + data
        for offset in range(0, len(blob), p.max_write_chunk):
            self._update(offset, blob[offset : offset + p.max_write_chunk])
        self._update(0, len(data).to_bytes(LENGTH_PREFIX_SIZE, "big"))
        try:
            stored = self.read_credential()
        except (CredentialAbsent, MalformedResponse) as exc:
            raise WriteVerificationFailed(f"credential read back is unusable: {exc}") from exc
        if stored != data:
            raise WriteVerificationFailed("credential read back differs from what was written")

    def _select_or_create_ef(self) -> None:
        """Leave the credential EF current, creating what is missing (ISO 7816-9)."""
        p = self._profile
        if p.df_aid is not None:
            try:
                self._select_df()
            except NotFound:
                self._select_mf()
                self._create(_df_fcp(p))
                self._select_df()
            find_ef, ef_ref = SELECT_CHILD_EF, _fid(p.ef_fid)
        else:
            find_ef, ef_ref = SELECT_PATH_FROM_MF, _fid(p.ef_fid)
        try:
            self._select(find_ef, ef_ref)
        except NotFound:
            if p.df_aid is None:
                self._select_mf()
            self._create(_ef_fcp(p))
            self._select(find_ef, ef_ref)

    # -- commands -------------------------------------------------------------------------

    def _select(self, p1: int, data: bytes) -> None:
        p = self._profile
        self._conn.send(CommandApdu(p.cla, INS_SELECT, p1, SELECT_NO_RESPONSE_DATA, data))

    def _select_df(self) -> None:
        assert self._profile.df_aid is not None
        self._select(SELECT_DF_NAME, self._profile.df_aid)

    def _select_mf(self) -> None:
        self._select(SELECT_MF_OR_FID, _fid(FID_MF))

    def _create(self, fcp: bytes) -> None:
        p = self._profile
        self._conn.send(CommandApdu(p.cla, INS_CREATE_FILE, 0x00, 0x00, fcp))

    def _read(self, offset: int, le: int, *, first: bool) -> bytes:
        p = self._profile
        if first and p.ef_sfi is not None:
            p1, p2 = P1_SFI | p.ef_sfi, offset
        else:
            p1, p2 = offset >> 8, offset & 0xFF
        data = self._conn.send(CommandApdu(p.cla, INS_READ_BINARY, p1, p2, le=le))
        if len(data) > le:
            raise MalformedResponse(f"READ BINARY returned {len(data)} bytes, asked for {le}")
        return data

    def _update(self, offset: int, chunk: bytes) -> None:
        p = self._profile
        le = 0 if p.update_with_le else None
        command = CommandApdu(p.cla, INS_UPDATE_BINARY, offset >> 8, offset & 0xFF, chunk, le)
        try:
            self._conn.send(command)
        except StatusWordError as exc:
            if exc.sw not in p.update_warnings:
                raise


def _fid(fid: int) -> bytes:
    return fid.to_bytes(2, "big")


def _df_fcp(p: Iso7816FsProfile) -> bytes:
    """FCP template for CREATE FILE of the application DF."""
    assert p.df_aid is not None
    body = (
        encode_tlv(TAG_FILE_DESCRIPTOR, bytes([FDB_DF]))
        + encode_tlv(TAG_FILE_ID, _fid(p.df_fid))
        + encode_tlv(TAG_DF_NAME, p.df_aid)
    )
    return encode_tlv(TAG_FCP, body)


def _ef_fcp(p: Iso7816FsProfile) -> bytes:
    """FCP template for CREATE FILE of the transparent credential EF."""
    body = (
        encode_tlv(TAG_FILE_DESCRIPTOR, bytes([FDB_TRANSPARENT_EF]))
        + encode_tlv(TAG_FILE_ID, _fid(p.ef_fid))
        + encode_tlv(TAG_FILE_SIZE, p.ef_size.to_bytes(2, "big"))
    )
    if p.ef_sfi is not None:
        body += encode_tlv(TAG_SFI, bytes([p.ef_sfi << 3]))
    return encode_tlv(TAG_FCP, body + p.ef_fcp_extra)
