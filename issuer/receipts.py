"""Signed grade receipts: a citizen can check their own derivation later.

A receipt binds a grade to the exact explanation it came from: the policy file's hash and a
Merkle root over the explanation lines, signed by the issuer.

**Leaf encoding.** Each :class:`~issuer.grading.RecordLine` is encoded as canonical CBOR
(RFC 8949 §4.2.1, :func:`verifier.core.cbor.encode`) of a map with the text keys of
:data:`LEAF_FIELDS` and the line's values (integers, booleans, text, ``null``). Leaf hash =
SHA-256(0x00 || leaf); inner node = SHA-256(0x01 || left || right); the tree over *n* leaves
is RFC 9162 §2.1.1's (split at the largest power of two below *n*); the empty tree's root is
SHA-256(""). Leaves are in explanation order (decision date, record id).

**Receipt.** A COSE_Sign1 (RFC 9052), protected header ``{1: alg, 4: kid, 16:
"application/starcard-grade-receipt+cwt"}``, whose payload is a CWT claims set (RFC 8392):
``2`` (sub) the subject's pseudonymous id, ``6`` (iat) seconds since the epoch, and the
text-keyed claims ``v`` (format 1), ``score``, ``base_score``, ``class``, ``stars``,
``policy_version``, ``policy_hash`` (32 bytes), ``as_of`` (``YYYY-MM-DD``), ``lines`` (tree
size) and ``merkle_root`` (32 bytes). No name, no ID number, no record content.

**Verification** (:func:`verify_receipt`), in order: 1. parse the COSE_Sign1 strictly; 2. the
``typ`` is a grade receipt; 3. the ``kid`` is the given key's; 4. the signature verifies over
the bytes as received; 5. the payload is a canonical CBOR map with every claim well typed;
6. the root recomputed from the given lines equals the signed root, for the signed tree size;
7. every line is consistent (``counts`` iff its reason code is ``counts``, the reason text is
the code's) and ``score == base_score + sum(points of counted lines)``; 8. with the policy
file: its hash is the signed one, and its bands, points and periods give the signed class,
stars, each line's points and effect end. Any failure raises; nothing returns a bare bool.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from issuer.grading import REASONS, Grade, RecordLine
from issuer.policy import Policy
from verifier.core.cbor import decode_strict, encode
from verifier.core.cose import HDR_TYP, IssuerSigner, parse_sign1, sign1, verify_sign1
from verifier.core.errors import VerificationError
from verifier.core.keys import IssuerPublicKey, kid_for

RECEIPT_TYP = "application/starcard-grade-receipt+cwt"
RECEIPT_VERSION = 1
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: The explanation fields a leaf commits to, in the order of :class:`RecordLine`.
LEAF_FIELDS = (
    "record_id",
    "category",
    "direction",
    "severity",
    "points",
    "counts",
    "reason_code",
    "reason",
    "legal_basis",
    "authority",
    "document_number",
    "decision_date",
    "effect_until",
    "effect_basis",
)
CLAIM_SUB, CLAIM_IAT = 2, 6
_T = TypeVar("_T", int, str, bytes)


class ReceiptError(Exception):
    """A receipt cannot be issued or does not verify; the message says which step failed."""


class ReceiptInvalid(ReceiptError):
    """The receipt itself is malformed, of another type, or not signed by the given key."""


class ReceiptMismatch(ReceiptError):
    """The receipt is authentic but the explanation (or the policy) given does not match it."""


@dataclass(frozen=True)
class ReceiptClaims:
    """The verified content of a receipt."""

    subject_id: str
    score: int
    base_score: int
    grade_class: str
    stars: int
    policy_version: str
    policy_hash: str
    as_of: dt.date
    lines: int
    merkle_root: bytes
    iat: int


def leaf_bytes(line: RecordLine) -> bytes:
    """The canonical CBOR encoding of one explanation line (the Merkle leaf)."""
    values = line.as_dict()
    return encode({name: values[name] for name in LEAF_FIELDS})


def leaf_hash(line: RecordLine) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf_bytes(line)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root(hashes: Sequence[bytes]) -> bytes:
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return _node(_root(hashes[:k]), _root(hashes[k:]))


def merkle_root(lines: Sequence[RecordLine]) -> bytes:
    """RFC 9162 Merkle tree hash over the lines' leaves, in the given order."""
    return _root([leaf_hash(line) for line in lines])


def inclusion_proof(lines: Sequence[RecordLine], index: int) -> list[bytes]:
    """The RFC 9162 §2.1.3.1 audit path of line ``index``.

    Raises:
        IndexError: ``index`` is not a line of ``lines``.
    """
    if not 0 <= index < len(lines):
        raise IndexError(f"line {index} is not in an explanation of {len(lines)} lines")
    hashes = [leaf_hash(line) for line in lines]

    def path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
        if len(leaves) <= 1:
            return []
        k = _split(len(leaves))
        if m < k:
            return [*path(m, leaves[:k]), _root(leaves[k:])]
        return [*path(m - k, leaves[k:]), _root(leaves[:k])]

    return path(index, hashes)


def verify_inclusion(
    line: RecordLine, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Checks that ``line`` is leaf ``index`` of the tree of ``tree_size`` leaves with
    ``root`` (RFC 9162 §2.1.3.2).

    Raises:
        ReceiptMismatch: the proof does not lead from the line to the root.
    """
    if not 0 <= index < tree_size:
        raise ReceiptMismatch(f"line {index} cannot be in a tree of {tree_size} lines")
    fn, sn, r = index, tree_size - 1, leaf_hash(line)
    for p in proof:
        if sn == 0:
            raise ReceiptMismatch("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or not hmac.compare_digest(r, root):
        raise ReceiptMismatch(f"line {index} is not included under this root")


def issue_receipt(
    subject_id: str,
    grade: Grade,
    policy: Policy,
    as_of: dt.date,
    iat: int,
    signer: IssuerSigner,
) -> bytes:
    """Signs a receipt for ``grade`` (the grade of ``subject_id`` under ``policy`` at
    ``as_of``, as :func:`issuer.grading.regrade` or :func:`issuer.grading.load_grade` give
    it).

    Raises:
        ReceiptError: the grade's arithmetic does not hold under ``policy`` (a grade from
            another policy), or the signer fails (see :func:`verifier.core.cose.sign1`).
    """
    counted = sum(line.points for line in grade.lines if line.counts)
    if grade.score != policy.base_score + counted:
        raise ReceiptError(
            f"grade of {subject_id} does not add up under {policy.version}: "
            f"{grade.score} != {policy.base_score} + {counted}"
        )
    claims: dict[int | str, object] = {
        CLAIM_SUB: subject_id,
        CLAIM_IAT: iat,
        "v": RECEIPT_VERSION,
        "score": grade.score,
        "base_score": policy.base_score,
        "class": grade.grade_class,
        "stars": grade.stars,
        "policy_version": policy.version,
        "policy_hash": bytes.fromhex(policy.sha256),
        "as_of": as_of.isoformat(),
        "lines": len(grade.lines),
        "merkle_root": merkle_root(grade.lines),
    }
    try:
        return sign1(encode(claims), signer, kid_for(signer.public_key()), {HDR_TYP: RECEIPT_TYP})
    except ValueError as exc:
        raise ReceiptError(f"the signer cannot sign the receipt: {exc}") from exc


def verify_receipt(
    receipt: bytes,
    lines: Sequence[RecordLine],
    public_key: IssuerPublicKey,
    *,
    policy: Policy | None = None,
) -> ReceiptClaims:
    """Verifies ``receipt`` and that ``lines`` are exactly the explanation it signed (steps
    in the module docstring). With ``policy`` also re-derives class, stars, points and
    effect ends from the policy file.

    Raises:
        ReceiptInvalid: steps 1-5 (format, type, key, signature, claims).
        ReceiptMismatch: steps 6-8 (lines, arithmetic, policy).
    """
    try:
        message = parse_sign1(receipt)  # 1
    except VerificationError as exc:
        raise ReceiptInvalid(f"not a COSE_Sign1 receipt: {exc.diagnostics()}") from exc
    if message.typ != RECEIPT_TYP:  # 2
        raise ReceiptInvalid(f"protected typ is {message.typ!r}, not {RECEIPT_TYP}")
    if not hmac.compare_digest(message.kid, kid_for(public_key)):  # 3
        raise ReceiptInvalid("the receipt was signed by another key (kid differs)")
    try:
        verify_sign1(message, public_key)  # 4
        payload = decode_strict(message.payload)  # 5
    except VerificationError as exc:
        raise ReceiptInvalid(f"receipt rejected: {exc.diagnostics()}") from exc
    claims = _claims(payload)
    if len(lines) != claims.lines:  # 6
        raise ReceiptMismatch(f"the receipt covers {claims.lines} lines, {len(lines)} given")
    if not hmac.compare_digest(merkle_root(lines), claims.merkle_root):
        raise ReceiptMismatch("the explanation differs from the one the receipt signed")
    for line in lines:  # 7
        if line.counts != (line.reason_code == "counts") or (
            REASONS.get(line.reason_code) != line.reason
        ):
            raise ReceiptMismatch(f"line of record {line.record_id} contradicts its reason")
    counted = sum(line.points for line in lines if line.counts)
    if claims.score != claims.base_score + counted:
        raise ReceiptMismatch(
            f"score {claims.score} != base {claims.base_score} + counted points {counted}"
        )
    if policy is not None:  # 8
        _check_policy(claims, lines, policy)
    return claims


def _check_policy(claims: ReceiptClaims, lines: Sequence[RecordLine], policy: Policy) -> None:
    if not hmac.compare_digest(policy.sha256, claims.policy_hash):
        raise ReceiptMismatch(
            f"the receipt was made under policy {claims.policy_hash[:12]}, "
            f"not {policy.version} ({policy.sha256[:12]})"
        )
    if policy.base_score != claims.base_score:
        raise ReceiptMismatch("the base score differs from the policy's")
    if policy.classify(claims.score) != (claims.grade_class, claims.stars):
        raise ReceiptMismatch("class and stars do not follow from the score under the policy")
    for line in lines:
        if line.reason_code == "not_in_catalogue":
            continue
        decided = dt.date.fromisoformat(line.decision_date)
        points = policy.points_for(line.category, line.direction, line.severity)
        period = policy.period_for(line.direction, line.severity, decided)
        if points != line.points or period is None:
            raise ReceiptMismatch(f"record {line.record_id}: points differ from the policy's")
        until = (decided + dt.timedelta(days=period.max_days)).isoformat()
        if until != line.effect_until:
            raise ReceiptMismatch(f"record {line.record_id}: effect end differs from the policy")


def _claims(payload: object) -> ReceiptClaims:
    if not isinstance(payload, Mapping):
        raise ReceiptInvalid("the receipt payload is not a map")
    if _claim(payload, "v", int) != RECEIPT_VERSION:
        raise ReceiptInvalid(f"receipt format {payload.get('v')!r} is not {RECEIPT_VERSION}")
    policy_hash = _claim(payload, "policy_hash", bytes)
    root = _claim(payload, "merkle_root", bytes)
    if len(policy_hash) != 32 or len(root) != 32:
        raise ReceiptInvalid("policy_hash and merkle_root must be 32 bytes")
    as_of = _claim(payload, "as_of", str)
    try:
        day = dt.date.fromisoformat(as_of)
    except ValueError:
        raise ReceiptInvalid(f"as_of {as_of!r} is not a date") from None
    return ReceiptClaims(
        subject_id=_claim(payload, CLAIM_SUB, str),
        score=_claim(payload, "score", int),
        base_score=_claim(payload, "base_score", int),
        grade_class=_claim(payload, "class", str),
        stars=_claim(payload, "stars", int),
        policy_version=_claim(payload, "policy_version", str),
        policy_hash=policy_hash.hex(),
        as_of=day,
        lines=_claim(payload, "lines", int),
        merkle_root=root,
        iat=_claim(payload, CLAIM_IAT, int),
    )


def _claim(payload: Mapping[object, object], key: int | str, kind: type[_T]) -> _T:
    value = payload.get(key)
    if type(value) is not kind:
        raise ReceiptInvalid(f"receipt claim {key!r} is missing or not {kind.__name__}")
    assert isinstance(value, kind)
    return value
