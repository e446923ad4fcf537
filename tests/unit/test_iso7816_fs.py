"""The ``iso7816-fs`` profile family: Iso7816FsSession against an in-memory ISO 7816-4 card.

:class:`FakeIsoCard` is a small file system card (MF, application DFs with names, transparent
EFs with short EF identifiers) that answers like vsmartcard's ``vicc -t iso7816`` does on the
commands the session uses (including its 6282 answer to UPDATE BINARY with Le), so that the
golden transcripts recorded here are also what the e2e test sees from vicc through pcscd.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from card_profiles.errors import (
    CardError,
    CardIOError,
    MalformedResponse,
    NotFound,
    StatusWordError,
)
from card_profiles.iso7816_fs import (
    ISO7816_FS,
    ISO7816_FS_MF,
    ISO7816_FS_PROFILES,
    CardKeyNotSupported,
    CredentialAbsent,
    Iso7816FsProfile,
    Iso7816FsSession,
    WriteVerificationFailed,
)
from card_profiles.scripted import (
    Exchange,
    RecordingTransport,
    ScriptedTransport,
    load_transcript,
    save_transcript,
)
from card_profiles.tlv import parse_all, parse_single
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.command import MalformedApdu, parse_command

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "vectors" / "transcripts"
UPDATE_GOLDEN = os.environ.get("STARCARD_UPDATE_GOLDEN") == "1"
Recording = tuple[Exchange, ...]


def golden_credential(size: int = 300, seed: bytes = b"iso7816-fs golden credential") -> bytes:
    """Deterministic credential-like bytes (SHA-256 in counter mode)."""
    out = b"".join(
        hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(size // 32 + 1)
    )
    return out[:size]


# -- the fake card ----------------------------------------------------------------------------


@dataclass(eq=False)
class _EF:
    fid: int
    sfi: int | None
    data: bytearray
    fixed_size: bool


@dataclass(eq=False)
class _DF:
    fid: int
    name: bytes | None
    parent: _DF | None
    children: list[_DF | _EF] = field(default_factory=list)

    def child(self, fid: int) -> _DF | _EF | None:
        return next((c for c in self.children if c.fid == fid), None)


class _Sw(Exception):
    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


class FakeIsoCard:
    """An ISO 7816-4 file-system card in memory (``process(apdu) -> data ‖ SW``).

    ``vicc_quirks`` (default): UPDATE BINARY carrying Le answers 6282 after writing, and EFs
    grow when written past their end, as vicc does. Without quirks: EFs have the fixed size
    of CREATE FILE (writing past it answers 6B00) and UPDATE with Le answers 9000.
    ``broken_update``: UPDATE BINARY answers 9000 but writes nothing.
    """

    def __init__(self, *, vicc_quirks: bool = True, broken_update: bool = False) -> None:
        self.mf = _DF(0x3F00, None, None)
        self.vicc_quirks = vicc_quirks
        self.broken_update = broken_update
        self.current_df = self.mf
        self.current_ef: _EF | None = None
        self.commands = 0

    def reset(self) -> None:
        self.current_df, self.current_ef = self.mf, None

    def add_ef(self, df: _DF, fid: int, data: bytes, *, sfi: int | None = None) -> _EF:
        ef = _EF(fid, sfi, bytearray(data), fixed_size=not self.vicc_quirks)
        df.children.append(ef)
        return ef

    def add_df(self, fid: int, name: bytes) -> _DF:
        df = _DF(fid, name, self.mf)
        self.mf.children.append(df)
        return df

    def process(self, apdu: bytes) -> bytes:
        self.commands += 1
        try:
            data = self._process(bytes(apdu))
        except _Sw as sw:
            return sw.sw.to_bytes(2, "big")
        return data

    def _process(self, apdu: bytes) -> bytes:
        try:
            cmd = parse_command(apdu)
        except MalformedApdu:
            raise _Sw(0x6700) from None
        if cmd.cla != 0x00:
            raise _Sw(0x6E00)
        handlers = {0xA4: self._select, 0xE0: self._create, 0xB0: self._read, 0xD6: self._update}
        handler = handlers.get(cmd.ins)
        if handler is None:
            raise _Sw(0x6D00)
        return handler(cmd.p1, cmd.p2, cmd.data, cmd.ne)

    def _named_dfs(self) -> list[_DF]:
        return [c for c in self.mf.children if isinstance(c, _DF) and c.name is not None]

    def _select(self, p1: int, p2: int, data: bytes, ne: int | None) -> bytes:
        if p2 != 0x0C:
            raise _Sw(0x6A86)  # vicc would crash building an FCP here
        target: _DF | _EF | None
        if p1 == 0x00 and data == b"\x3f\x00":
            target = self.mf
        elif p1 in (0x00, 0x02) and len(data) == 2:
            target = self.current_df.child(int.from_bytes(data, "big"))
            if p1 == 0x02 and target is not None and not isinstance(target, _EF):
                raise _Sw(0x6981)
        elif p1 == 0x04 and data:
            target = next((d for d in self._named_dfs() if d.name == data), None)
        elif p1 == 0x08 and data and len(data) % 2 == 0:
            target = self.mf
            for i in range(0, len(data), 2):
                if not isinstance(target, _DF):
                    raise _Sw(0x6A82)
                target = target.child(int.from_bytes(data[i : i + 2], "big"))
                if target is None:
                    break
        else:
            raise _Sw(0x6A86)
        if target is None:
            raise _Sw(0x6A82)
        if isinstance(target, _DF):
            self.current_df, self.current_ef = target, None
        else:
            self.current_ef = target
        return b"\x90\x00"

    def _create(self, p1: int, p2: int, data: bytes, ne: int | None) -> bytes:
        try:
            fcp = parse_single(data)
            items = {t.tag: t.value for t in parse_all(fcp.value)} if fcp.tag == 0x62 else {}
        except ValueError:
            raise _Sw(0x6A80) from None
        if 0x82 not in items or 0x83 not in items or len(items[0x83]) != 2:
            raise _Sw(0x6A80)
        fid = int.from_bytes(items[0x83], "big")
        if self.current_df.child(fid) is not None:
            raise _Sw(0x6A89)
        if items[0x82][:1] == b"\x38":
            name = items.get(0x84)
            if name is not None and any(d.name == name for d in self._named_dfs()):
                raise _Sw(0x6A8A)
            df = _DF(fid, name, self.current_df)
            self.current_df.children.append(df)
            self.current_df, self.current_ef = df, None
            return b"\x90\x00"
        if items[0x82][:1] != b"\x01":
            raise _Sw(0x6A80)
        size = int.from_bytes(items.get(0x80, b"\x00"), "big")
        sfi_byte = items.get(0x88)
        sfi = sfi_byte[0] >> 3 if sfi_byte else None
        ef = self.add_ef(self.current_df, fid, bytes(size), sfi=sfi)
        self.current_ef = ef
        return b"\x90\x00"

    def _addressed_ef(self, p1: int, p2: int) -> tuple[_EF, int]:
        if p1 & 0x80:
            sfi = p1 & 0x1F
            ef = next(
                (c for c in self.current_df.children if isinstance(c, _EF) and c.sfi == sfi),
                None,
            )
            if ef is None:
                raise _Sw(0x6A82)
            self.current_ef = ef
            return ef, p2
        if self.current_ef is None:
            raise _Sw(0x6986)
        return self.current_ef, (p1 << 8) | p2

    def _read(self, p1: int, p2: int, data: bytes, ne: int | None) -> bytes:
        ef, offset = self._addressed_ef(p1, p2)
        if data or ne is None:
            raise _Sw(0x6700)
        if offset >= len(ef.data) and not (offset == 0 and not ef.data):
            raise _Sw(0x6B00)
        out = bytes(ef.data[offset : offset + ne])
        sw = b"\x62\x82" if len(out) < ne else b"\x90\x00"
        return out + sw

    def _update(self, p1: int, p2: int, data: bytes, ne: int | None) -> bytes:
        ef, offset = self._addressed_ef(p1, p2)
        if not data:
            raise _Sw(0x6700)
        if offset > len(ef.data):
            raise _Sw(0x6B00)
        if ef.fixed_size and offset + len(data) > len(ef.data):
            raise _Sw(0x6B00)
        if not self.broken_update:
            ef.data[offset : offset + len(data)] = data
        if ne is not None and self.vicc_quirks:
            return b"\x62\x82"
        return b"\x90\x00"

    def ef_data(self, profile: Iso7816FsProfile) -> bytes:
        """The raw content of the profile's credential EF (test inspection only)."""
        df = self.mf
        if profile.df_aid is not None:
            df = next(d for d in self._named_dfs() if d.name == profile.df_aid)
        ef = df.child(profile.ef_fid)
        assert isinstance(ef, _EF)
        return bytes(ef.data)


def personalized(
    credential: bytes, profile: Iso7816FsProfile = ISO7816_FS, **kwargs: bool
) -> FakeIsoCard:
    card = FakeIsoCard(**kwargs)
    Iso7816FsSession(InProcessTransport(card), profile).write_credential(credential)
    card.reset()
    return card


def tap(card: FakeIsoCard, profile: Iso7816FsProfile = ISO7816_FS) -> tuple[bytes, int]:
    session = Iso7816FsSession(InProcessTransport(card), profile)
    session.select()
    return session.read_credential(), session.apdu_count


# -- profile data -----------------------------------------------------------------------------


def test_profiles_are_registered_by_name() -> None:
    assert ISO7816_FS_PROFILES == {"iso7816-fs": ISO7816_FS, "iso7816-fs-mf": ISO7816_FS_MF}
    assert ISO7816_FS.df_aid == b"\xf0STARCARDFS"
    assert hash(ISO7816_FS) == hash(dataclasses.replace(ISO7816_FS))


@pytest.mark.parametrize(
    "change",
    [
        {"name": ""},
        {"df_aid": b"\xf0ABC"},
        {"df_aid": bytes(17)},
        {"ef_fid": 0x3F00},
        {"df_fid": 0xFFFF},
        {"ef_fid": 0xDF01},
        {"ef_fid": 0x10000},
        {"ef_sfi": 0},
        {"ef_sfi": 31},
        {"max_read_chunk": 1},
        {"max_read_chunk": 257},
        {"max_write_chunk": 1},
        {"max_write_chunk": 256},
        {"max_credential_size": 0},
        {"max_credential_size": 0x7FFF},
        {"ef_size": 2049},
        {"ef_size": 0x8001},
        {"update_warnings": (0x6A82,)},
        {"update_warnings": (0x9000,)},
        {"ef_fcp_extra": b"\x8c\x05"},
        {"ef_fcp_extra": b"\x83\x02\x00\x01"},
        {"cla": 0x10},
        {"cla": 0xFF},
    ],
)
def test_profile_rejects_out_of_range_fields(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(ISO7816_FS, **change)  # type: ignore[arg-type]


def test_profile_accepts_extra_security_attributes_in_the_fcp() -> None:
    profile = dataclasses.replace(ISO7816_FS, ef_fcp_extra=bytes.fromhex("8C03037F00"))
    card = FakeIsoCard()
    Iso7816FsSession(InProcessTransport(card), profile).write_credential(b"x")
    assert tap(card, profile)[0] == b"x"


# -- personalization and tap ------------------------------------------------------------------


def test_personalize_blank_card_then_tap_reads_it_back() -> None:
    credential = golden_credential(300)
    card = FakeIsoCard()
    session = Iso7816FsSession(InProcessTransport(card))
    session.write_credential(credential)
    # SELECT DF (6A82), SELECT MF, CREATE DF, SELECT DF, SELECT EF (6A82), CREATE EF,
    # SELECT EF, 2 UPDATE (302 bytes in 255-byte pieces), UPDATE length, 2 READ (read-back).
    assert session.apdu_count == 12
    stored = card.ef_data(ISO7816_FS)
    assert len(stored) == ISO7816_FS.ef_size
    assert stored[:302] == (300).to_bytes(2, "big") + credential
    card.reset()
    assert tap(card) == (credential, 3)


def test_rewriting_an_existing_ef_takes_no_create() -> None:
    card = personalized(b"old credential " * 30)
    session = Iso7816FsSession(InProcessTransport(card))
    session.write_credential(b"new")
    assert session.apdu_count == 2 + 1 + 1 + 1  # SELECT DF, SELECT EF, UPDATE, UPDATE len, READ
    card.reset()
    # The stale tail of the old credential is still in the EF; the length prefix hides it.
    assert card.ef_data(ISO7816_FS)[5:20] == (b"old credential " * 30)[3:18]
    assert tap(card)[0] == b"new"


@pytest.mark.parametrize(
    ("size", "apdus"),
    [(1, 2), (254, 2), (255, 3), (300, 3), (510, 3), (511, 4), (2048, 10)],
)
def test_tap_apdu_count_by_credential_size(size: int, apdus: int) -> None:
    credential = golden_credential(size)
    assert tap(personalized(credential)) == (credential, apdus)


@pytest.mark.parametrize(
    ("profile", "apdus"),
    [
        (ISO7816_FS, 3),  # SELECT DF, READ (SFI), READ
        (ISO7816_FS_MF, 3),  # SELECT by path, READ, READ
        (dataclasses.replace(ISO7816_FS, ef_sfi=None), 4),  # SELECT DF, SELECT EF, READ, READ
        (dataclasses.replace(ISO7816_FS_MF, ef_sfi=7), 3),  # SELECT MF, READ (SFI), READ
        (dataclasses.replace(ISO7816_FS, max_read_chunk=128), 4),  # SELECT DF, 3 READ
    ],
    ids=["df-sfi", "mf-path", "df-no-sfi", "mf-sfi", "chunk-128"],
)
def test_tap_apdu_count_for_a_300_byte_credential(profile: Iso7816FsProfile, apdus: int) -> None:
    credential = golden_credential(300)
    assert tap(personalized(credential, profile), profile) == (credential, apdus)


def test_mf_profile_creates_the_ef_under_the_mf() -> None:
    card = personalized(b"abc", ISO7816_FS_MF)
    assert [c.fid for c in card.mf.children] == [0xC001]
    assert card.ef_data(ISO7816_FS_MF)[:5] == b"\x00\x03abc"


def test_update_without_le_for_cards_that_reject_case_4_updates() -> None:
    profile = dataclasses.replace(ISO7816_FS, update_with_le=False, update_warnings=())
    card = FakeIsoCard(vicc_quirks=False)
    recorder = RecordingTransport(InProcessTransport(card))
    Iso7816FsSession(recorder, profile).write_credential(b"abc")
    updates = [e.command for e in recorder.exchanges if e.command[1] == 0xD6]
    assert updates == [
        bytes.fromhex("00D6000005") + b"\x00\x00abc",
        bytes.fromhex("00D60000020003"),
    ]
    assert tap(card, profile)[0] == b"abc"


def test_a_warning_not_listed_in_the_profile_is_raised() -> None:
    profile = dataclasses.replace(ISO7816_FS, update_warnings=())
    with pytest.raises(StatusWordError) as info:
        Iso7816FsSession(InProcessTransport(FakeIsoCard()), profile).write_credential(b"abc")
    assert info.value.sw == 0x6282


def test_fixed_size_ef_smaller_than_the_first_read_chunk() -> None:
    # A card whose EF was pre-created by the vendor just large enough: the first 256-byte
    # READ BINARY hits the end of the file (6282), so the session reads the prefix exactly.
    card = FakeIsoCard(vicc_quirks=False)
    df = card.add_df(0xDF01, ISO7816_FS.df_aid or b"")
    card.add_ef(df, 0xC001, b"\x00\x05hello", sfi=1)
    session = Iso7816FsSession(InProcessTransport(card))
    session.select()
    assert session.read_credential() == b"hello"
    assert session.apdu_count == 1 + 3  # SELECT, READ 256 (6282), READ 2, READ 5


def test_write_past_a_fixed_size_ef_is_refused() -> None:
    card = FakeIsoCard(vicc_quirks=False)
    df = card.add_df(0xDF01, ISO7816_FS.df_aid or b"")
    card.add_ef(df, 0xC001, bytes(10), sfi=1)
    profile = dataclasses.replace(ISO7816_FS, update_with_le=False)
    with pytest.raises(StatusWordError) as info:
        Iso7816FsSession(InProcessTransport(card), profile).write_credential(bytes(20))
    assert info.value.sw == 0x6B00


# -- refusals and malformed cards -------------------------------------------------------------


def test_card_without_the_application_is_not_found() -> None:
    session = Iso7816FsSession(InProcessTransport(FakeIsoCard()))
    with pytest.raises(NotFound):
        session.select()


def test_created_but_never_written_ef_has_no_credential() -> None:
    card = FakeIsoCard()
    df = card.add_df(0xDF01, ISO7816_FS.df_aid or b"")
    card.add_ef(df, 0xC001, bytes(2050), sfi=1)
    with pytest.raises(CredentialAbsent) as info:
        tap(card)
    assert isinstance(info.value, NotFound)


def test_erased_ff_ef_has_no_credential() -> None:
    card = FakeIsoCard()
    df = card.add_df(0xDF01, ISO7816_FS.df_aid or b"")
    card.add_ef(df, 0xC001, b"\xff" * 2050, sfi=1)
    with pytest.raises(CredentialAbsent):
        tap(card)


@pytest.mark.parametrize(
    "content",
    [
        b"",  # empty EF
        b"\x01",  # shorter than the prefix
        (2049).to_bytes(2, "big") + bytes(2100),  # longer than the profile allows
        (300).to_bytes(2, "big") + bytes(100),  # EF ends before the announced length
    ],
    ids=["empty", "one-byte", "too-long", "truncated"],
)
def test_malformed_ef_content_is_a_malformed_response(content: bytes) -> None:
    card = FakeIsoCard(vicc_quirks=False)
    df = card.add_df(0xDF01, ISO7816_FS.df_aid or b"")
    card.add_ef(df, 0xC001, content, sfi=1)
    with pytest.raises(MalformedResponse):
        tap(card)


class _Answers:
    """A card answering READ BINARY from a list of canned responses (after SELECT)."""

    def __init__(self, *responses: bytes) -> None:
        self.responses = list(responses)

    def process(self, apdu: bytes) -> bytes:
        if apdu[1] == 0xA4:
            return b"\x90\x00"
        return self.responses.pop(0) if self.responses else b"\x6a\x82"


def test_card_returning_more_than_le_is_malformed() -> None:
    card = _Answers(b"\x00\x03abc\x90\x00", b"\x00" * 300 + b"\x90\x00")
    profile = dataclasses.replace(ISO7816_FS, max_read_chunk=4)
    session = Iso7816FsSession(InProcessTransport(card), profile)
    session.select()
    with pytest.raises(MalformedResponse):
        session.read_credential()


def test_card_returning_no_data_is_malformed() -> None:
    card = _Answers(b"\x01\x00" + bytes(254) + b"\x90\x00", b"\x90\x00")
    session = Iso7816FsSession(InProcessTransport(card))
    session.select()
    with pytest.raises(MalformedResponse):
        session.read_credential()


def test_card_dribbling_one_byte_per_read_still_terminates() -> None:
    answers = [b"\x00\x04" + b"\x90\x00"] + [bytes([i]) + b"\x90\x00" for i in range(4)]
    session = Iso7816FsSession(InProcessTransport(_Answers(*answers)))
    session.select()
    assert session.read_credential() == bytes(range(4))
    assert session.apdu_count == 6


def test_write_that_does_not_stick_is_detected() -> None:
    card = FakeIsoCard(broken_update=True)
    with pytest.raises(WriteVerificationFailed):
        Iso7816FsSession(InProcessTransport(card)).write_credential(b"abc")


def test_write_rejects_empty_and_oversized_credentials_without_sending() -> None:
    card = FakeIsoCard()
    session = Iso7816FsSession(InProcessTransport(card))
    for bad in (b"", bytes(ISO7816_FS.max_credential_size + 1)):
        with pytest.raises(ValueError):
            session.write_credential(bad)
    assert card.commands == 0


def test_no_card_key_so_no_internal_authenticate() -> None:
    card = personalized(b"abc")
    card.commands = 0
    session = Iso7816FsSession(InProcessTransport(card))
    assert session.has_card_key is False
    assert Iso7816FsSession.has_card_key is False
    with pytest.raises(CardKeyNotSupported) as info:
        session.internal_authenticate(bytes(32))
    assert isinstance(info.value, CardError)
    assert not isinstance(info.value, StatusWordError)
    assert session.apdu_count == 0 and card.commands == 0


# -- torn writes ------------------------------------------------------------------------------


class _DyingTransport:
    """InProcessTransport that loses the card after ``budget`` APDUs."""

    def __init__(self, card: FakeIsoCard, budget: int) -> None:
        self._inner = InProcessTransport(card)
        self._budget = budget

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if self._budget <= 0:
            raise CardIOError("card pulled out")
        self._budget -= 1
        return self._inner.transmit(apdu)

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize("budget", range(0, 7))
def test_torn_write_leaves_old_credential_none_or_new_never_a_mix(budget: int) -> None:
    old, new = golden_credential(400, b"old"), golden_credential(300, b"new")
    card = personalized(old)
    with pytest.raises(CardIOError):
        Iso7816FsSession(_DyingTransport(card, budget)).write_credential(new)
    card.reset()
    try:
        found: bytes | None = tap(card)[0]
    except CredentialAbsent:
        found = None
    # SELECT DF, SELECT EF: old stays. Any UPDATE before the last: nothing. Then: new.
    assert found == (old if budget <= 2 else None if budget <= 4 else new)


# -- golden transcripts -----------------------------------------------------------------------


def check_golden(name: str, exchanges: tuple[Exchange, ...]) -> list[Exchange]:
    """Compare ``exchanges`` with the stored transcript ``name`` (or store it in update mode)."""
    path = TRANSCRIPTS / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_transcript(path, exchanges)
    assert path.is_file(), f"{path} missing: run with STARCARD_UPDATE_GOLDEN=1 to record it"
    golden = load_transcript(path)
    assert list(exchanges) == golden, f"{name} differs from the recording"
    return golden


def record_personalization(profile: Iso7816FsProfile) -> tuple[Exchange, ...]:
    """Blank card: write the golden credential, then a full tap."""
    card = FakeIsoCard()
    recorder = RecordingTransport(InProcessTransport(card))
    Iso7816FsSession(recorder, profile).write_credential(golden_credential())
    card.reset()
    session = Iso7816FsSession(recorder, profile)
    session.select()
    session.read_credential()
    return recorder.exchanges


def record_tap(profile: Iso7816FsProfile) -> tuple[Exchange, ...]:
    recorder = RecordingTransport(InProcessTransport(personalized(golden_credential(), profile)))
    session = Iso7816FsSession(recorder, profile)
    session.select()
    session.read_credential()
    return recorder.exchanges


@pytest.mark.parametrize(
    ("name", "profile", "recorder"),
    [
        ("iso7816_fs_personalize.json", ISO7816_FS, record_personalization),
        ("iso7816_fs_tap.json", ISO7816_FS, record_tap),
        ("iso7816_fs_mf_personalize.json", ISO7816_FS_MF, record_personalization),
        ("iso7816_fs_mf_tap.json", ISO7816_FS_MF, record_tap),
    ],
)
def test_golden_transcript_matches_the_fake_card(
    name: str, profile: Iso7816FsProfile, recorder: Callable[[Iso7816FsProfile], Recording]
) -> None:
    check_golden(name, recorder(profile))


@pytest.mark.parametrize("profile", [ISO7816_FS, ISO7816_FS_MF], ids=lambda p: p.name)
def test_golden_tap_replays_through_the_session(profile: Iso7816FsProfile) -> None:
    prefix = "iso7816_fs" if profile is ISO7816_FS else "iso7816_fs_mf"
    golden = load_transcript(TRANSCRIPTS / f"{prefix}_tap.json")
    assert len(golden) == 3
    with ScriptedTransport(golden) as transport:
        session = Iso7816FsSession(transport, profile)
        session.select()
        assert session.read_credential() == golden_credential()
        assert session.apdu_count == 3


def test_golden_personalization_replays_through_the_session() -> None:
    golden = load_transcript(TRANSCRIPTS / "iso7816_fs_personalize.json")
    with ScriptedTransport(golden) as transport:
        Iso7816FsSession(transport).write_credential(golden_credential())
        session = Iso7816FsSession(transport)
        session.select()
        assert session.read_credential() == golden_credential()
    assert [e.sw for e in golden[:7]] == [0x6A82, 0x9000, 0x9000, 0x9000, 0x6A82, 0x9000, 0x9000]
    assert {e.sw for e in golden[7:10]} == {0x6282}  # vicc's answer to UPDATE BINARY with Le
