"""Grading policy as versioned data (TOML), validated on load.

A policy never lives in code: points, bands and periods come from the file, and the file's
SHA-256 is recorded with every grade so that a grade can be reproduced and explained.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEVERITIES = ("轻微", "一般", "严重")
DIRECTIONS = ("+", "-")
DEFAULT_POLICY = Path(__file__).resolve().parent / "policy" / "pilot-2026.1.toml"


class PolicyError(ValueError):
    """The policy file is not valid; the message names the file and the field to fix."""


@dataclass(frozen=True)
class Category:
    key: str
    name: str
    direction: str
    points: dict[str, int]


@dataclass(frozen=True)
class Policy:
    version: str
    effective_from: dt.date
    base_score: int
    class_minimums: tuple[tuple[str, int], ...]
    star_minimums: tuple[tuple[int, int], ...]
    effect_days: dict[str, dict[str, int]]
    objection_suspends_effect: bool
    categories: dict[str, Category]
    sha256: str

    def classify(self, score: int) -> tuple[str, int]:
        """Returns (class, stars); stars are 1-5 for class A and 0 otherwise."""
        grade_class = "D"
        for name, minimum in self.class_minimums:
            if score >= minimum:
                grade_class = name
                break
        stars = 0
        if grade_class == "A":
            stars = max((s for s, minimum in self.star_minimums if score >= minimum), default=1)
        return grade_class, stars


def load_policy(path: Path = DEFAULT_POLICY) -> Policy:
    """Reads and validates a policy file.

    Raises:
        PolicyError: unreadable TOML, a missing or mistyped field, unknown severities or
            directions, bands out of order.
    """
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid UTF-8 TOML: {exc}") from None
    where = str(path)
    classes = _table(data, "classes", where)
    class_minimums = tuple((str(k), _int(v, f"classes.{k}", where)) for k, v in classes.items())
    if [m for _, m in class_minimums] != sorted((m for _, m in class_minimums), reverse=True):
        raise PolicyError(f"{where}: [classes] must list minimums from the best class down")
    if not class_minimums or class_minimums[0][0] != "A":
        raise PolicyError(f"{where}: [classes] must start with class A")
    stars = _table(data, "stars", where)
    star_minimums = tuple(sorted((int(k), _int(v, f"stars.{k}", where)) for k, v in stars.items()))
    if [s for s, _ in star_minimums] != [1, 2, 3, 4, 5]:
        raise PolicyError(f"{where}: [stars] must define levels 1 to 5")
    effect = _table(data, "effect_days", where)
    effect_days: dict[str, dict[str, int]] = {}
    for direction in DIRECTIONS:
        per = _table(effect, direction, f"{where}: effect_days")
        effect_days[direction] = {
            s: _int(per.get(s), f"effect_days.{direction}.{s}", where) for s in SEVERITIES
        }
    categories: dict[str, Category] = {}
    for key, cat in _table(data, "categories", where).items():
        if not isinstance(cat, dict):
            raise PolicyError(f"{where}: categories.{key} must be a table")
        cat_direction = cat.get("direction")
        if not isinstance(cat_direction, str) or cat_direction not in DIRECTIONS:
            raise PolicyError(f"{where}: categories.{key}.direction must be '+' or '-'")
        points_table = _table(cat, "points", f"{where}: categories.{key}")
        points = {
            s: _int(points_table.get(s), f"categories.{key}.points.{s}", where) for s in SEVERITIES
        }
        if any(p < 0 for p in points.values()):
            raise PolicyError(f"{where}: categories.{key}.points are magnitudes (>= 0)")
        categories[key] = Category(key, str(cat.get("name", key)), cat_direction, points)
    effective_from = data.get("effective_from")
    if not isinstance(effective_from, dt.date):
        raise PolicyError(f"{where}: effective_from must be a date (YYYY-MM-DD)")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise PolicyError(f"{where}: version must be a non-empty string")
    objection = data.get("objection", {})
    return Policy(
        version=version,
        effective_from=effective_from,
        base_score=_int(data.get("base_score"), "base_score", where),
        class_minimums=class_minimums,
        star_minimums=star_minimums,
        effect_days=effect_days,
        objection_suspends_effect=bool(objection.get("suspends_effect", True)),
        categories=categories,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: [{key}] is missing or not a table")
    return value


def _int(value: object, name: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise PolicyError(f"{where}: {name} must be an integer, got {value!r}")
    return value
