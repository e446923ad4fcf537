"""The issuer's signing keys in the HSM and the signed trust list verifiers pin to the root.

In production the root key lives offline and the trust list is signed at a key ceremony
(``starcard-hsm``); the online issuer only serves that file. The embedded default (demo,
tests) keeps the root in the same ``hsm_sim`` and signs the list itself at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from hsm_sim import Hsm, KeyPurpose, Signer
from verifier.core.jwks import to_jwks
from verifier.core.keys import kid_for
from verifier.core.trust import TrustedKey, TrustStore
from verifier.core.trust_list import TrustListEntry, issue_trust_list

# The windows of the first key generation (UTC): both keys sign from 2026-01-01 until
# 2029-01-01 and stay trusted for verification until 2031-01-01, so that everything they
# signed (credentials live at most a year) expires before they leave the list.
KEYS_NOT_BEFORE = 1_767_225_600
KEYS_SIGN_UNTIL = 1_861_920_000
KEYS_NOT_AFTER = 1_924_992_000


@dataclass(frozen=True)
class IssuerKeys:
    """The credential and status-list signers with their key ids."""

    credential: Signer
    credential_kid: bytes
    status: Signer
    status_kid: bytes

    def entries(self) -> list[TrustListEntry]:
        """This generation's keys as trust-list entries (windows above)."""
        windows = (KEYS_NOT_BEFORE, KEYS_SIGN_UNTIL, KEYS_NOT_AFTER)
        return [
            TrustListEntry.for_key(self.credential.public_key(), "credential", *windows),
            TrustListEntry.for_key(self.status.public_key(), "status_list", *windows),
        ]

    def trusted_keys(self) -> list[TrustedKey]:
        return [entry.trusted_key() for entry in self.entries()]

    def trust_store(self) -> TrustStore:
        return TrustStore(self.trusted_keys())

    def jwks(self) -> dict[str, object]:
        """RFC 7517 JWKS of the same keys, for independent tools (no windows in JWK)."""
        return to_jwks(self.trusted_keys())


def ensure_issuer_keys(hsm: Hsm, credential_label: str, status_label: str) -> IssuerKeys:
    """Creates the two issuer keys in the HSM on first use and returns their signers."""
    if not hsm.has_key(credential_label):
        hsm.create_key(credential_label, KeyPurpose.CREDENTIAL_SIGNING)
    if not hsm.has_key(status_label):
        hsm.create_key(status_label, KeyPurpose.STATUS_LIST_SIGNING)
    credential = hsm.signer(credential_label, KeyPurpose.CREDENTIAL_SIGNING)
    status = hsm.signer(status_label, KeyPurpose.STATUS_LIST_SIGNING)
    return IssuerKeys(
        credential=credential,
        credential_kid=kid_for(credential.public_key()),
        status=status,
        status_kid=kid_for(status.public_key()),
    )


def embedded_trust_list(
    hsm: Hsm, root_label: str, keys: IssuerKeys, issuer: str, now: int, valid_s: int
) -> tuple[ec.EllipticCurvePublicKey, bytes]:
    """Embedded default: root key in the same HSM; signs a fresh list (``seq`` = ``now``, so
    every restart publishes a newer list). Returns (root public key, trust list bytes)."""
    if not hsm.has_key(root_label):
        hsm.create_key(root_label, KeyPurpose.TRUST_LIST_ROOT)
    root = hsm.signer(root_label, KeyPurpose.TRUST_LIST_ROOT)
    data = issue_trust_list(
        keys.entries(),
        issuer=issuer,
        sequence=now,
        iat=now,
        exp=now + valid_s,
        root_signer=root,
        root_kid=kid_for(root.public_key()),
    )
    return root.public_key(), data
