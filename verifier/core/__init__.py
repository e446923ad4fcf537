"""The StarCard trust spec: credential, status list and trust formats, and every
verification rule. Pure: imports only the standard library, ``cryptography`` and ``cbor2``;
time is always an argument.

Modules: :mod:`.errors`, :mod:`.keys`, :mod:`.cbor`, :mod:`.cose`, :mod:`.credential`,
:mod:`.status_list`, :mod:`.trust`, :mod:`.challenge`, :mod:`.verify`, :mod:`.jwks`.
"""

from __future__ import annotations

from verifier.core.challenge import ChallengeState, begin, challenge_bytes
from verifier.core.cose import Sign1Message, parse_sign1, sign1, verify_sign1
from verifier.core.credential import (
    Credential,
    CredentialClaims,
    issue_credential,
    parse_credential,
    qr_token_binding,
)
from verifier.core.errors import (
    BadSignature,
    CannotVerify,
    ChallengeExpired,
    ChallengeMismatch,
    CloneSuspected,
    Expired,
    MalformedCredential,
    NotYetValid,
    Revoked,
    StatusListExpired,
    StatusListMissing,
    StatusListRollback,
    Suspended,
    TrustDataMissing,
    UnsupportedAlgorithm,
    UntrustedKey,
    VerificationError,
)
from verifier.core.jwks import to_jwks
from verifier.core.keys import kid_for
from verifier.core.signer import Signer
from verifier.core.status_list import (
    MIN_ENTRIES,
    StatusList,
    StatusListCache,
    StatusListToken,
    issue_status_list,
    parse_status_list_token,
)
from verifier.core.trust import TrustedKey, TrustStore
from verifier.core.verify import Verdict, VerifiedCard, decide, verify_card

__all__ = [
    "MIN_ENTRIES",
    "BadSignature",
    "CannotVerify",
    "ChallengeExpired",
    "ChallengeMismatch",
    "ChallengeState",
    "CloneSuspected",
    "Credential",
    "CredentialClaims",
    "Expired",
    "MalformedCredential",
    "NotYetValid",
    "Revoked",
    "Sign1Message",
    "Signer",
    "StatusList",
    "StatusListCache",
    "StatusListExpired",
    "StatusListMissing",
    "StatusListRollback",
    "StatusListToken",
    "Suspended",
    "TrustDataMissing",
    "TrustStore",
    "TrustedKey",
    "UnsupportedAlgorithm",
    "UntrustedKey",
    "Verdict",
    "VerificationError",
    "VerifiedCard",
    "begin",
    "challenge_bytes",
    "decide",
    "issue_credential",
    "issue_status_list",
    "kid_for",
    "parse_credential",
    "parse_sign1",
    "parse_status_list_token",
    "qr_token_binding",
    "sign1",
    "to_jwks",
    "verify_card",
    "verify_sign1",
]
