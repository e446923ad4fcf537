"""The key register of the key ceremony: which keys exist, what they are for, and when.

A small JSON file kept next to the HSM configuration (format :data:`FORMAT`)::

    {"format": "starcard-key-register/1", "issuer": text, "sequence": int,
     "root": {"label", "kid", "created_at"} | null,
     "keys": [{"label", "purpose": "credential" | "status_list", "kid", "created_at",
               "sign_from", "sign_until", "verify_until", "retired_at": int | null}, ...]}

Times are integer seconds since the epoch. ``kid`` is hex of the first 8 bytes of SHA-256
over the key's SubjectPublicKeyInfo DER (the project's key id, :func:`kid_of`).
``sequence`` is that of the last trust list signed.

Invariants: every key has ``sign_from < sign_until <= verify_until``; labels are unique;
the file is replaced atomically (mode 0600) and never holds key material. Errors:
:class:`RegisterError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hsm_sim.errors import HsmError
from hsm_sim.purpose import KeyPurpose
from hsm_sim.storage import write_atomically

__all__ = [
    "FORMAT",
    "PURPOSES",
    "KeyRegister",
    "KeyUse",
    "RegisterError",
    "RegisteredKey",
    "RootKey",
    "kid_of",
]

FORMAT = "starcard-key-register/1"

KeyUse = Literal["credential", "status_list"]
PURPOSES: dict[str, KeyPurpose] = {
    "credential": KeyPurpose.CREDENTIAL_SIGNING,
    "status_list": KeyPurpose.STATUS_LIST_SIGNING,
}


class RegisterError(HsmError):
    """The key register is missing, malformed, or the requested change breaks a rule."""


def kid_of(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """First 8 bytes of SHA-256 over the SubjectPublicKeyInfo DER (the project's kid)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()[:8]


@dataclass(frozen=True)
class RootKey:
    label: str
    kid: str
    created_at: int


@dataclass(frozen=True)
class RegisteredKey:
    """A credential or status-list key and its windows (ValueError if inconsistent)."""

    label: str
    purpose: KeyUse
    kid: str
    created_at: int
    sign_from: int
    sign_until: int
    verify_until: int
    retired_at: int | None = None

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {sorted(PURPOSES)}")
        if not self.sign_from < self.sign_until <= self.verify_until:
            raise ValueError(
                f"key {self.label!r} needs sign_from < sign_until <= verify_until "
                f"({self.sign_from}, {self.sign_until}, {self.verify_until})"
            )

    def signs_at(self, now: int) -> bool:
        return self.retired_at is None and self.sign_from <= now < self.sign_until

    def listed_at(self, now: int) -> bool:
        """Whether a trust list issued at ``now`` carries this key: until ``verify_until``,
        except a key retired before it ever could sign."""
        never_signed = self.retired_at is not None and self.retired_at <= self.sign_from
        return not never_signed and now < self.verify_until


@dataclass
class KeyRegister:
    """The register's content; :meth:`load` / :meth:`save` read and write the file."""

    issuer: str = "starcard"
    sequence: int = 0
    root: RootKey | None = None
    keys: list[RegisteredKey] = field(default_factory=list)

    def key(self, label: str) -> RegisteredKey:
        for key in self.keys:
            if key.label == label:
                return key
        raise RegisterError(f"key {label!r} is not in the register")

    def has_label(self, label: str) -> bool:
        return any(k.label == label for k in self.keys) or (
            self.root is not None and self.root.label == label
        )

    def add(self, key: RegisteredKey) -> None:
        if self.has_label(key.label):
            raise RegisterError(f"label {key.label!r} is already registered")
        self.keys.append(key)

    def replace(self, key: RegisteredKey) -> None:
        self.keys = [key if k.label == key.label else k for k in self.keys]

    def active(self, purpose: KeyUse, now: int) -> RegisteredKey | None:
        """The key of ``purpose`` that signs at ``now`` (the latest to start, if several)."""
        signing = [k for k in self.keys if k.purpose == purpose and k.signs_at(now)]
        return max(signing, key=lambda k: k.sign_from, default=None)

    def listed(self, now: int) -> list[RegisteredKey]:
        return [k for k in self.keys if k.listed_at(now)]

    @classmethod
    def load(cls, path: Path) -> KeyRegister:
        """Read ``path``; an absent file is an empty register."""
        if not path.exists():
            return cls()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            root = doc["root"]
            register = cls(
                issuer=_typed(doc["issuer"], str),
                sequence=_typed(doc["sequence"], int),
                root=None if root is None else RootKey(**_fields(root, RootKey)),
                keys=[RegisteredKey(**_fields(k, RegisteredKey)) for k in doc["keys"]],
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegisterError(f"{path}: cannot read the key register ({exc})") from exc
        labels = [k.label for k in register.keys]
        if len(set(labels)) != len(labels):
            raise RegisterError(f"{path}: duplicate labels in the key register")
        return register

    def save(self, path: Path) -> None:
        doc = {
            "format": FORMAT,
            "issuer": self.issuer,
            "sequence": self.sequence,
            "root": None if self.root is None else dataclasses.asdict(self.root),
            "keys": [dataclasses.asdict(k) for k in self.keys],
        }
        try:
            write_atomically(path, json.dumps(doc, indent=1).encode("utf-8") + b"\n")
        except OSError as exc:
            raise RegisterError(f"{path}: cannot write the key register ({exc})") from exc


def _typed(value: object, kind: type[Any]) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _fields(doc: object, cls: type[Any]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise TypeError("register entries must be objects")
    names = {f.name for f in dataclasses.fields(cls)}
    if set(doc) - names:
        raise ValueError(f"unknown fields {sorted(set(doc) - names)}")
    for name, value in doc.items():
        if name == "label" or name == "kid" or name == "purpose":
            _typed(value, str)
        elif value is not None:
            _typed(value, int)
    return dict(doc)
