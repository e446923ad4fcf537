"""Signed grade receipts: a citizen re-derives their grade from the explanation they hold.

Every tampering with the explanation (a line, its points, its reason, its order, a line
dropped or added), the receipt, or the policy makes verification raise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import cbor2
import pytest

from issuer.grading import Grade, RecordLine, grade_records, load_grade
from issuer.policy import DEFAULT_POLICY, POLICY_DIR, Policy, load_policy
from issuer.receipts import (
    RECEIPT_TYP,
    ReceiptError,
    ReceiptInvalid,
    ReceiptMismatch,
    inclusion_proof,
    issue_receipt,
    leaf_bytes,
    merkle_root,
    verify_inclusion,
    verify_receipt,
)
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import graded_subject
from tests.keysigner import KeySigner
from tests.unit.test_policy_grading import rec
from verifier.core.cbor import encode
from verifier.core.cose import HDR_TYP, sign1
from verifier.core.keys import kid_for

AS_OF = dt.date(2026, 11, 28)
IAT = 1_795_000_000


@pytest.fixture
def policy() -> Policy:
    return load_policy()


@pytest.fixture
def grade(policy: Policy) -> Grade:
    rows = [
        rec(1, "volunteering", "+", "一般", dt.date(2026, 3, 5)),
        rec(2, "honour", "+", "一般", dt.date(2026, 5, 20)),
        rec(3, "admin_penalty", "-", "一般", dt.date(2024, 6, 3)),
        rec(4, "tax_arrears", "-", "严重", dt.date(2026, 8, 1), objection_open=1),
        rec(5, "blood_donation", "+", "轻微", dt.date(2026, 9, 1)),
        rec(6, "court_judgment_default", "-", "轻微", dt.date(2026, 10, 1)),
        rec(7, "littering", "-", "一般", dt.date(2026, 10, 2)),
    ]
    return grade_records(policy, rows, AS_OF)


@pytest.fixture
def signer() -> KeySigner:
    return KeySigner()


def test_receipt_verifies_and_carries_the_grade(
    grade: Grade, policy: Policy, signer: KeySigner
) -> None:
    receipt = issue_receipt("S0123", grade, policy, AS_OF, IAT, signer)
    claims = verify_receipt(receipt, grade.lines, signer.public_key(), policy=policy)
    assert (claims.subject_id, claims.score, claims.grade_class, claims.stars) == (
        "S0123",
        grade.score,
        grade.grade_class,
        grade.stars,
    )
    assert (claims.policy_version, claims.policy_hash) == (policy.version, policy.sha256)
    assert (claims.as_of, claims.iat, claims.lines) == (AS_OF, IAT, len(grade.lines))
    assert claims.merkle_root == merkle_root(grade.lines)
    assert len(receipt) < 400  # no record content travels in the receipt


@pytest.mark.parametrize(
    "change",
    [
        {"points": -99},
        {"reason": "counts"},
        {"reason_code": "counts", "counts": True, "reason": "counts"},
        {"legal_basis": "another basis"},
        {"document_number": "DOC-X"},
        {"decision_date": "2026-03-06"},
        {"effect_until": "2099-01-01"},
        {"counts": False},
    ],
)
def test_tampering_with_any_line_breaks_the_receipt(
    grade: Grade, policy: Policy, signer: KeySigner, change: dict[str, object]
) -> None:
    receipt = issue_receipt("S0123", grade, policy, AS_OF, IAT, signer)
    for index in range(len(grade.lines)):
        lines = list(grade.lines)
        lines[index] = dataclasses.replace(lines[index], **change)  # type: ignore[arg-type]
        if lines[index] == grade.lines[index]:
            continue
        with pytest.raises(ReceiptMismatch):
            verify_receipt(receipt, lines, signer.public_key())


def test_dropping_adding_or_reordering_lines_breaks_the_receipt(
    grade: Grade, policy: Policy, signer: KeySigner
) -> None:
    receipt = issue_receipt("S0123", grade, policy, AS_OF, IAT, signer)
    key = signer.public_key()
    with pytest.raises(ReceiptMismatch, match="covers 7 lines, 6 given"):
        verify_receipt(receipt, grade.lines[:-1], key)
    with pytest.raises(ReceiptMismatch):
        verify_receipt(receipt, (*grade.lines, grade.lines[0]), key)
    with pytest.raises(ReceiptMismatch, match="explanation differs"):
        verify_receipt(receipt, tuple(reversed(grade.lines)), key)


def test_consistency_and_arithmetic_are_checked_before_trusting_lines(
    policy: Policy, signer: KeySigner, grade: Grade
) -> None:
    """An issuer bug (a line counted against its reason, a wrong sum) cannot be signed away."""
    wrong_sum = dataclasses.replace(grade, score=grade.score + 1)
    with pytest.raises(ReceiptError, match="does not add up"):
        issue_receipt("S0123", wrong_sum, policy, AS_OF, IAT, signer)
    lines = list(grade.lines)
    index = next(i for i, line in enumerate(lines) if line.reason_code == "objection")
    lines[index] = dataclasses.replace(lines[index], counts=True)
    counted = sum(line.points for line in lines if line.counts)
    bad = Grade(policy.base_score + counted, "D", 0, tuple(lines))
    receipt = issue_receipt("S0123", bad, policy, AS_OF, IAT, signer)
    with pytest.raises(ReceiptMismatch, match="contradicts its reason"):
        verify_receipt(receipt, bad.lines, signer.public_key())


def test_another_key_another_type_or_a_flipped_bit_is_invalid(
    grade: Grade, policy: Policy, signer: KeySigner
) -> None:
    receipt = issue_receipt("S0123", grade, policy, AS_OF, IAT, signer)
    with pytest.raises(ReceiptInvalid, match="another key"):
        verify_receipt(receipt, grade.lines, KeySigner().public_key())
    flipped = bytearray(receipt)
    flipped[-1] ^= 1
    with pytest.raises(ReceiptInvalid):
        verify_receipt(bytes(flipped), grade.lines, signer.public_key())
    kid = kid_for(signer.public_key())
    payload = cbor2.loads(cbor2.loads(receipt).value[2])
    other_type = sign1(encode(payload), signer, kid, {HDR_TYP: 61})
    with pytest.raises(ReceiptInvalid, match="typ"):
        verify_receipt(other_type, grade.lines, signer.public_key())
    payload["score"] = "115"
    wrong_claim = sign1(encode(payload), signer, kid, {HDR_TYP: RECEIPT_TYP})
    with pytest.raises(ReceiptInvalid, match="'score'"):
        verify_receipt(wrong_claim, grade.lines, signer.public_key())
    with pytest.raises(ReceiptInvalid):
        verify_receipt(b"\x00", grade.lines, signer.public_key())


def test_the_policy_file_re_derives_the_grade(
    grade: Grade, policy: Policy, signer: KeySigner, tmp_path: Path
) -> None:
    receipt = issue_receipt("S0123", grade, policy, AS_OF, IAT, signer)
    old = load_policy(POLICY_DIR / "pilot-2019.1.toml")
    with pytest.raises(ReceiptMismatch, match="made under policy"):
        verify_receipt(receipt, grade.lines, signer.public_key(), policy=old)
    # a policy that changed its points but kept the signed hash cannot exist; one that is
    # otherwise identical but signs a grade with points it does not give is caught
    edited = tmp_path / "edited.toml"
    edited.write_text(
        DEFAULT_POLICY.read_text(encoding="utf-8").replace(
            'points = { "轻微" = 2, "一般" = 5, "严重" = 10 }',
            'points = { "轻微" = 2, "一般" = 6, "严重" = 10 }',
        ),
        encoding="utf-8",
    )
    other = load_policy(edited)
    lines = tuple(
        dataclasses.replace(line, points=6) if line.category == "volunteering" else line
        for line in grade.lines
    )
    counted = sum(line.points for line in lines if line.counts)
    forged = Grade(other.base_score + counted, *other.classify(other.base_score + counted), lines)
    receipt = issue_receipt("S0123", forged, other, AS_OF, IAT, signer)
    verify_receipt(receipt, forged.lines, signer.public_key(), policy=other)
    with pytest.raises(ReceiptMismatch, match="points differ"):
        verify_receipt(receipt, forged.lines, signer.public_key(), policy=_with_hash(policy, other))


def _with_hash(policy: Policy, like: Policy) -> Policy:
    """``policy``'s rules under ``like``'s hash: a verifier holding the wrong rules."""
    return dataclasses.replace(policy, sha256=like.sha256)


def test_inclusion_proof_for_every_line_of_every_tree_size(grade: Grade) -> None:
    for size in range(1, len(grade.lines) + 1):
        lines = grade.lines[:size]
        root = merkle_root(lines)
        for index, line in enumerate(lines):
            proof = inclusion_proof(lines, index)
            verify_inclusion(line, index, size, proof, root)
            with pytest.raises(ReceiptMismatch):
                verify_inclusion(
                    dataclasses.replace(line, points=line.points + 1), index, size, proof, root
                )
            if size > 1:
                with pytest.raises(ReceiptMismatch):
                    verify_inclusion(line, (index + 1) % size, size, proof, root)
    with pytest.raises(IndexError):
        inclusion_proof(grade.lines, len(grade.lines))


def test_tree_shape_and_leaf_encoding_are_rfc_9162() -> None:
    """Known answers computed by hand from the definitions (0x00 leaf, 0x01 node)."""
    assert merkle_root([]) == hashlib.sha256(b"").digest()
    line = RecordLine(1, "c", "+", "一般", 5, True, "counts", "counts", "b", "a", "d",
                      "2026-01-01", "2027-01-01", "policy p")  # fmt: skip
    leaf = leaf_bytes(line)
    assert leaf == encode({name: value for name, value in line.as_dict().items()})
    h = hashlib.sha256(b"\x00" + leaf).digest()
    assert merkle_root([line]) == h
    n2 = hashlib.sha256(b"\x01" + h + h).digest()
    assert merkle_root([line, line, line]) == hashlib.sha256(b"\x01" + n2 + h).digest()


def test_receipt_from_the_issuer_key_over_a_stored_grade(sqlite_issuer: IssuerContext) -> None:
    """End to end: grade in the database, sign with the issuer's HSM key, verify."""
    subject = graded_subject(sqlite_issuer, NOW)
    with sqlite_issuer.engine.connect() as conn:
        stored = load_grade(conn, sqlite_issuer.policy, subject)
    assert stored is not None
    signer = sqlite_issuer.keys.credential
    receipt = issue_receipt(subject, stored, sqlite_issuer.policy, NOW.date(), IAT, signer)
    claims = verify_receipt(receipt, stored.lines, signer.public_key(), policy=sqlite_issuer.policy)
    assert (claims.subject_id, claims.stars) == (subject, stored.stars)
