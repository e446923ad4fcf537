"""HSM port and backends.

``Signer`` is the port the issuer signs through; ``Hsm`` (:mod:`hsm_sim.port`) is the whole
HSM as the issuer and the key ceremony see it. Backends: ``HsmSim``, the embedded simulator
(non-exportable P-256 keys and AES-256 card master keys by label, one purpose per key,
retirement, audit log, optional encrypted persistence); :class:`hsm_sim.client.RemoteHsm`,
the same simulator in its own process (:mod:`hsm_sim.server`); and
:class:`hsm_sim.pkcs11_backend.Pkcs11Hsm`, any PKCS#11 token (SoftHSM2 in tests). Card master
keys serve the StarCard secure channel (``scp_session``) and card manufacture
(``factory_card_key``, only for keys created with ``factory_export=True``). The key ceremony
CLI is :mod:`hsm_sim.ceremony`.
"""

from __future__ import annotations

from hsm_sim.audit import AuditEvent, AuditOp
from hsm_sim.errors import (
    CardCryptogramMismatch,
    ExportNotAllowed,
    HsmConfigError,
    HsmError,
    HsmModuleNotFound,
    HsmPinIncorrect,
    HsmStorageError,
    HsmTimeout,
    HsmTokenNotFound,
    HsmUnavailable,
    KeyExists,
    KeyNotFound,
    KeyRetired,
    NotSupported,
    WrongKeyPurpose,
)
from hsm_sim.port import Hsm
from hsm_sim.purpose import SIGNING_PURPOSES, KeyPurpose
from hsm_sim.signer import Signer
from hsm_sim.sim import HsmSim

__all__ = [
    "SIGNING_PURPOSES",
    "AuditEvent",
    "AuditOp",
    "CardCryptogramMismatch",
    "ExportNotAllowed",
    "Hsm",
    "HsmConfigError",
    "HsmError",
    "HsmModuleNotFound",
    "HsmPinIncorrect",
    "HsmSim",
    "HsmStorageError",
    "HsmTimeout",
    "HsmTokenNotFound",
    "HsmUnavailable",
    "KeyExists",
    "KeyNotFound",
    "KeyPurpose",
    "KeyRetired",
    "NotSupported",
    "Signer",
    "WrongKeyPurpose",
]
