"""The list cache's ``state.json``: ETags, watermarks and the time of the last sync.

Split from :mod:`verifier.list_store` (which re-exports these names). Parsing is strict:
anything but the written form is :class:`CacheRefused`, naming the file and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from verifier.benefits_store import BenefitsMark

__all__ = ["CacheRefused", "CacheState", "StatusEntry"]

_FORMAT = 1


class CacheRefused(RuntimeError):
    """The cache directory holds a torn, tampered or rolled-back file; says which and what
    to do."""


@dataclass(frozen=True)
class StatusEntry:
    """What the state records for one status list id."""

    uri: str
    iat: int
    digest: str
    etag: str | None = None


@dataclass(frozen=True)
class CacheState:
    """The contents of ``state.json`` (all fields optional: an empty cache is valid)."""

    trust_seq: int | None = None
    trust_iat: int | None = None
    trust_digest: str | None = None
    trust_etag: str | None = None
    status: dict[int, StatusEntry] = field(default_factory=dict)
    last_sync: int | None = None
    benefits_version: int | None = None
    benefits_iat: int | None = None
    benefits_digest: str | None = None
    benefits_etag: str | None = None

    @property
    def benefits_mark(self) -> BenefitsMark | None:
        if self.benefits_version is None or self.benefits_digest is None:
            return None
        return BenefitsMark(self.benefits_version, bytes.fromhex(self.benefits_digest))

    def to_json(self) -> bytes:
        doc = {
            "format": _FORMAT,
            "trust_list": None
            if self.trust_seq is None
            else {
                "seq": self.trust_seq,
                "iat": self.trust_iat,
                "sha256": self.trust_digest,
                "etag": self.trust_etag,
            },
            "status_lists": {
                str(list_id): {"uri": e.uri, "iat": e.iat, "sha256": e.digest, "etag": e.etag}
                for list_id, e in sorted(self.status.items())
            },
            "last_sync": self.last_sync,
            "benefits": None
            if self.benefits_version is None
            else {
                "version": self.benefits_version,
                "iat": self.benefits_iat,
                "sha256": self.benefits_digest,
                "etag": self.benefits_etag,
            },
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: Path) -> CacheState:
        """Raises :class:`CacheRefused` naming ``where`` for anything but the written form."""
        try:
            doc = json.loads(raw)
            if doc["format"] != _FORMAT:
                raise ValueError(f"format {doc['format']!r} is not {_FORMAT}")
            trust = doc["trust_list"]
            status = {
                int(k): StatusEntry(_text(v["uri"]), _int(v["iat"]), _hex(v["sha256"]), v["etag"])
                for k, v in doc["status_lists"].items()
            }
            last_sync = doc["last_sync"]
            if last_sync is not None:
                _int(last_sync)
            state = cls(status=status, last_sync=last_sync)
            if trust is not None:
                state = replace(
                    state,
                    trust_seq=_int(trust["seq"]),
                    trust_iat=_int(trust["iat"]),
                    trust_digest=_hex(trust["sha256"]),
                    trust_etag=trust["etag"],
                )
            benefits = doc.get("benefits")  # absent in caches written before it was synced
            if benefits is not None:
                state = replace(
                    state,
                    benefits_version=_int(benefits["version"]),
                    benefits_iat=_int(benefits["iat"]),
                    benefits_digest=_hex(benefits["sha256"]),
                    benefits_etag=benefits["etag"],
                )
            return state
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CacheRefused(
                f"{where} is torn or was altered ({exc}); delete it and run "
                "`starcard-verifier sync` to fetch the lists again (the list files keep "
                "their own watermarks)"
            ) from None


def _int(value: object) -> int:
    if type(value) is not int:
        raise ValueError(f"{value!r} is not an integer")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a non-empty text")
    return value


def _hex(value: object) -> str:
    if not isinstance(value, str) or len(bytes.fromhex(value)) != 32:
        raise ValueError(f"{value!r} is not a SHA-256 in hex")
    return value
