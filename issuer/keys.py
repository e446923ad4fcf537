"""The issuer's signing keys in the HSM and the trust data verifiers need to check them."""

from __future__ import annotations

from dataclasses import dataclass

from hsm_sim import HsmSim, KeyPurpose, Signer
from verifier.core.jwks import to_jwks
from verifier.core.keys import kid_for
from verifier.core.trust import TrustedKey, TrustStore

# Until the signed trust list with rotation lands, the issuer's keys are trusted in one fixed
# window (2026-01-01 to 2031-01-01 UTC).
KEYS_NOT_BEFORE = 1_767_225_600
KEYS_NOT_AFTER = 1_924_992_000


@dataclass(frozen=True)
class IssuerKeys:
    """The credential and status-list signers with their key ids."""

    credential: Signer
    credential_kid: bytes
    status: Signer
    status_kid: bytes

    def trusted_keys(self) -> list[TrustedKey]:
        not_before, until = KEYS_NOT_BEFORE, KEYS_NOT_AFTER
        return [
            TrustedKey(
                kid=self.credential_kid,
                alg="ES256",
                purpose="credential",
                public_key=self.credential.public_key(),
                not_before=not_before,
                not_after=until,
            ),
            TrustedKey(
                kid=self.status_kid,
                alg="ES256",
                purpose="status_list",
                public_key=self.status.public_key(),
                not_before=not_before,
                not_after=until,
            ),
        ]

    def trust_store(self) -> TrustStore:
        return TrustStore(self.trusted_keys())

    def jwks(self) -> dict[str, object]:
        return to_jwks(self.trusted_keys())


def ensure_issuer_keys(hsm: HsmSim, credential_label: str, status_label: str) -> IssuerKeys:
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
