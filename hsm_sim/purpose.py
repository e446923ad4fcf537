"""Key purposes. A key has exactly one purpose, fixed when it is created."""

from __future__ import annotations

import enum

__all__ = ["SIGNING_PURPOSES", "KeyPurpose"]


class KeyPurpose(enum.Enum):
    """What a key may be used for. A key has exactly one purpose, fixed at creation."""

    CREDENTIAL_SIGNING = "credential_signing"
    STATUS_LIST_SIGNING = "status_list_signing"
    TRUST_LIST_ROOT = "trust_list_root"
    CARD_KEY_DIVERSIFICATION = "card_key_diversification"
    AUDIT_CHECKPOINT_SIGNING = "audit_checkpoint_signing"
    """Signs the issuer's audit-log checkpoints (head of its hash chain)."""


#: Purposes whose keys may produce signatures through :meth:`HsmSim.signer`.
SIGNING_PURPOSES = frozenset(
    {
        KeyPurpose.CREDENTIAL_SIGNING,
        KeyPurpose.STATUS_LIST_SIGNING,
        KeyPurpose.TRUST_LIST_ROOT,
        KeyPurpose.AUDIT_CHECKPOINT_SIGNING,
    }
)
