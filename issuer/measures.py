"""The catalogue of red and black list measures (``policy/measures/catalogue.toml``).

Measures are catalogue-managed (国发〔2016〕33号; 国办发〔2020〕49号): each lists its list, the
kinds of subject it targets, the measure, its basis, the implementing unit and whether it is
mandatory (强制性) or recommended (推荐性). No unit adds measures of its own.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

ListKind = Literal["red", "black"]
LIST_KINDS: tuple[str, ...] = get_args(ListKind)
TARGETS = ("individual", "organisation")
DEFAULT_CATALOGUE = Path(__file__).resolve().parent / "policy" / "measures" / "catalogue.toml"
_MEASURE_KEYS = {"list", "targets", "measure", "basis", "implementing_unit", "mandatory"}


class CatalogueError(ValueError):
    """The measures catalogue file is not valid; the message names the file and the field."""


@dataclass(frozen=True)
class Measure:
    key: str
    list_kind: str
    targets: tuple[str, ...]
    measure: str
    basis: str
    implementing_unit: str
    mandatory: bool


@dataclass(frozen=True)
class MeasureCatalogue:
    """The loaded catalogue; ``version`` is stored with every applied measure, ``sha256`` is
    the file's hash (to tell two files claiming one version apart)."""

    version: str
    sha256: str
    measures: Mapping[str, Measure]

    def mandatory(self, list_kind: str, target: str) -> tuple[Measure, ...]:
        """The mandatory measures for an entry of ``list_kind`` about a ``target`` subject."""
        return tuple(
            m
            for _, m in sorted(self.measures.items())
            if m.mandatory and m.list_kind == list_kind and target in m.targets
        )


def load_catalogue(path: Path = DEFAULT_CATALOGUE) -> MeasureCatalogue:
    """Reads and validates the measures catalogue.

    Raises:
        CatalogueError: unreadable TOML, a missing or unknown field, an unknown list or
            target, or a measure without its basis or implementing unit.
    """
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{path}: not valid UTF-8 TOML: {exc}") from None
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise CatalogueError(f"{path}: version must be a non-empty string")
    table = data.get("measures")
    if not isinstance(table, dict) or not table:
        raise CatalogueError(f"{path}: [measures] must list at least one measure")
    measures = {}
    for key, item in table.items():
        here = f"{path}: measures.{key}"
        if not isinstance(item, dict):
            raise CatalogueError(f"{here} must be a table")
        if set(item) != _MEASURE_KEYS:
            raise CatalogueError(f"{here} must have exactly {', '.join(sorted(_MEASURE_KEYS))}")
        if item["list"] not in LIST_KINDS:
            raise CatalogueError(f"{here}.list must be 'red' or 'black'")
        targets = item["targets"]
        if not isinstance(targets, list) or not targets or not set(targets) <= set(TARGETS):
            raise CatalogueError(f"{here}.targets must list some of {', '.join(TARGETS)}")
        for name in ("measure", "basis", "implementing_unit"):
            if not isinstance(item[name], str) or not item[name].strip():
                raise CatalogueError(f"{here}.{name} must be a non-empty string")
        if not isinstance(item["mandatory"], bool):
            raise CatalogueError(f"{here}.mandatory must be true or false")
        measures[key] = Measure(
            key,
            item["list"],
            tuple(targets),
            item["measure"],
            item["basis"],
            item["implementing_unit"],
            item["mandatory"],
        )
    return MeasureCatalogue(version, hashlib.sha256(raw).hexdigest(), measures)
