"""How :class:`~hsm_sim.pkcs11_backend.Pkcs11Hsm` lays its keys out on a PKCS#11 token.

Per key ``label`` (token objects, ``CKA_PRIVATE``):

* the key object (P-256 private key or AES-256 secret key): ``CKA_LABEL`` = ``label``,
  ``CKA_ID`` = :func:`key_id` = ``"SC" 01 ‖ purpose code ‖ flags ‖ SHA-256(label)[:11]``
  (16 bytes). Objects without the ``"SC" 01`` prefix belong to another application and are
  ignored; a prefixed id that does not match its label is an error
  (:class:`~hsm_sim.errors.HsmStorageError`);
* data objects (``CKA_APPLICATION`` = :data:`APPLICATION`, same label) holding
  ``{"created_at", "retired_at"}`` as JSON. SoftHSM makes a data object's ``CKA_VALUE``
  read-only, so a change writes a new object and readers take the union
  (:func:`read_metas`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from pkcs11 import Attribute, ObjectClass

from hsm_sim.errors import HsmStorageError
from hsm_sim.purpose import KeyPurpose

__all__ = [
    "APPLICATION",
    "create_meta",
    "key_id",
    "parse_key_id",
    "private_template",
    "read_metas",
]

APPLICATION = "starcard-hsm"

_ID_PREFIX = b"SC\x01"
_ID_LENGTH = 16
_FLAG_FACTORY_EXPORT = 0x01
_PURPOSE_CODES = {
    KeyPurpose.CREDENTIAL_SIGNING: 1,
    KeyPurpose.STATUS_LIST_SIGNING: 2,
    KeyPurpose.TRUST_LIST_ROOT: 3,
    KeyPurpose.CARD_KEY_DIVERSIFICATION: 4,
    KeyPurpose.AUDIT_CHECKPOINT_SIGNING: 5,
}
_PURPOSES_BY_CODE = {code: purpose for purpose, code in _PURPOSE_CODES.items()}


def key_id(label: str, purpose: KeyPurpose, *, factory_export: bool = False) -> bytes:
    """The ``CKA_ID`` of key ``label``: prefix, purpose code, flags, SHA-256(label)[:11]."""
    flags = _FLAG_FACTORY_EXPORT if factory_export else 0
    digest = hashlib.sha256(label.encode("utf-8")).digest()
    return _ID_PREFIX + bytes([_PURPOSE_CODES[purpose], flags]) + digest[: _ID_LENGTH - 5]


def parse_key_id(label: str, cka_id: object) -> tuple[KeyPurpose, bool] | None:
    """(purpose, factory_export) of one of our keys, None for another application's object.

    Raises :class:`HsmStorageError` if the id is ours but does not match the label.
    """
    if not isinstance(cka_id, bytes) or not cka_id.startswith(_ID_PREFIX):
        return None
    purpose = _PURPOSES_BY_CODE.get(cka_id[3]) if len(cka_id) == _ID_LENGTH else None
    if purpose is None:
        raise HsmStorageError(f"token object {label!r} has a malformed CKA_ID")
    factory_export = bool(cka_id[4] & _FLAG_FACTORY_EXPORT)
    if not hmac.compare_digest(cka_id, key_id(label, purpose, factory_export=factory_export)):
        raise HsmStorageError(f"token object {label!r}: CKA_ID does not match its label")
    return purpose, factory_export


def private_template(*, sign: bool) -> dict[Attribute, Any]:
    """A key that stays on the token: sensitive, never extractable, one usage."""
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.MODIFIABLE: True,
        Attribute.SIGN: sign,
        Attribute.DERIVE: False,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
    }


def create_meta(session: Any, label: str, created_at: float, retired_at: float | None) -> None:
    doc = {"created_at": created_at, "retired_at": retired_at}
    session.create_object(
        {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.MODIFIABLE: True,
            Attribute.LABEL: label,
            Attribute.APPLICATION: APPLICATION,
            Attribute.VALUE: json.dumps(doc, sort_keys=True).encode("utf-8"),
        }
    )


def read_metas(label: str, metas: list[Any]) -> tuple[float, float | None]:
    """(created_at, retired_at) from the data objects (the earliest creation, the earliest
    retirement); a key without one (a create that died half-way) counts as created at 0."""
    created: list[float] = []
    retired: list[float] = []
    for meta in metas:
        try:
            doc = json.loads(bytes(meta[Attribute.VALUE]).decode("utf-8"))
            created_at, retired_at = doc["created_at"], doc["retired_at"]
        except (ValueError, KeyError, TypeError) as exc:
            raise HsmStorageError(f"token metadata of {label!r} is malformed") from exc
        if not isinstance(created_at, int | float) or not (
            retired_at is None or isinstance(retired_at, int | float)
        ):
            raise HsmStorageError(f"token metadata of {label!r} has the wrong types")
        created.append(float(created_at))
        if retired_at is not None:
            retired.append(float(retired_at))
    return min(created, default=0.0), min(retired, default=None)
