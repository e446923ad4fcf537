"""Wycheproof (C2SP/wycheproof) signature vectors through the production verify functions.

* ``ecdsa_secp256r1_sha256_p1363_test.json``: every vector through
  :func:`verifier.core.keys.verify_es256` (what :func:`verify_sign1` and the card check use)
  with the vector's public key, loaded by :func:`p256_from_point` as card keys are.
* ``ed25519_test.json``: every vector through :func:`verifier.core.keys.verify_eddsa`.

Rule: every ``valid`` vector verifies; every ``invalid`` one raises a
:class:`VerificationError` (``BadSignature``, or ``MalformedCredential`` for a signature
that is not 64 bytes), never anything else. ``acceptable`` vectors (none in the stored
files; see ``docs/formats.md``) may go either way but must end in one of those two
outcomes, never another exception; their outcome is pinned here so that a change of
behaviour is noticed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from verifier.core.errors import BadSignature, MalformedCredential, VerificationError
from verifier.core.keys import ed25519_from_raw, p256_from_point, verify_eddsa, verify_es256

WYCHEPROOF = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof"
ECDSA_FILE = WYCHEPROOF / "ecdsa_secp256r1_sha256_p1363_test.json"
ED25519_FILE = WYCHEPROOF / "ed25519_test.json"


def _vectors(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    doc = json.loads(path.read_text())
    out = [(group, test) for group in doc["testGroups"] for test in group["tests"]]
    assert len(out) == doc["numberOfTests"]
    return out


def _outcome(verify: Any, key: object, test: dict[str, Any]) -> str:
    try:
        verify(key, bytes.fromhex(test["sig"]), bytes.fromhex(test["msg"]))
    except BadSignature:
        return "rejected: BadSignature"
    except MalformedCredential:
        return "rejected: MalformedCredential"
    except VerificationError as exc:  # pragma: no cover - a failure of the test
        pytest.fail(f"tcId {test['tcId']}: unexpected {type(exc).__name__}")
    return "accepted"


def _run(path: Path, load_key: Any, verify: Any) -> Counter[tuple[str, str]]:
    tally: Counter[tuple[str, str]] = Counter()
    for group, test in _vectors(path):
        outcome = _outcome(verify, load_key(group), test)
        result = test["result"]
        if result == "valid":
            assert outcome == "accepted", f"tcId {test['tcId']} {test['comment']}: {outcome}"
        elif result == "invalid":
            assert outcome != "accepted", f"tcId {test['tcId']} {test['comment']}: accepted"
        else:
            assert result == "acceptable", result
        tally[(result, outcome)] += 1
    return tally


def _p256_key(group: dict[str, Any]) -> object:
    assert group["publicKey"]["curve"] == "secp256r1" and group["sha"] == "SHA-256"
    return p256_from_point(bytes.fromhex(group["publicKey"]["uncompressed"]))


def _ed25519_key(group: dict[str, Any]) -> object:
    assert group["publicKey"]["curve"] == "edwards25519"
    return ed25519_from_raw(bytes.fromhex(group["publicKey"]["pk"]))


def test_wycheproof_ecdsa_p256_sha256_p1363() -> None:
    tally = _run(ECDSA_FILE, _p256_key, verify_es256)
    assert dict(tally) == {
        ("valid", "accepted"): 173,
        ("invalid", "rejected: BadSignature"): 68,
        ("invalid", "rejected: MalformedCredential"): 21,
    }


def test_wycheproof_ed25519() -> None:
    tally = _run(ED25519_FILE, _ed25519_key, verify_eddsa)
    assert dict(tally) == {
        ("valid", "accepted"): 88,
        ("invalid", "rejected: BadSignature"): 51,
        ("invalid", "rejected: MalformedCredential"): 12,
    }


def test_a_flipped_bit_in_a_valid_p1363_vector_is_rejected() -> None:
    """Guards the runner itself: a valid vector with one bit changed must be rejected."""
    group, test = next((g, t) for g, t in _vectors(ECDSA_FILE) if t["result"] == "valid")
    sig = bytearray.fromhex(test["sig"])
    sig[5] ^= 0x01
    with pytest.raises(BadSignature):
        verify_es256(_p256_key(group), bytes(sig), bytes.fromhex(test["msg"]))
