"""HSM port and simulator.

``Signer`` is the port the issuer signs through; ``HsmSim`` is the embedded simulator
(non-exportable P-256 keys and AES-256 card master keys by label, one purpose per key, audit
log, optional encrypted persistence). Card master keys serve the StarCard secure channel
(``scp_session``) and card manufacture (``factory_card_key``, only for keys created with
``factory_export=True``). A PKCS#11 backend will implement the same ``Signer`` port.
"""

from __future__ import annotations

from hsm_sim.audit import AuditEvent, AuditOp
from hsm_sim.errors import (
    CardCryptogramMismatch,
    ExportNotAllowed,
    HsmError,
    HsmStorageError,
    KeyExists,
    KeyNotFound,
    WrongKeyPurpose,
)
from hsm_sim.purpose import SIGNING_PURPOSES, KeyPurpose
from hsm_sim.signer import Signer
from hsm_sim.sim import HsmSim

__all__ = [
    "SIGNING_PURPOSES",
    "AuditEvent",
    "AuditOp",
    "CardCryptogramMismatch",
    "ExportNotAllowed",
    "HsmError",
    "HsmSim",
    "HsmStorageError",
    "KeyExists",
    "KeyNotFound",
    "KeyPurpose",
    "Signer",
    "WrongKeyPurpose",
]
