"""Grading policy as versioned, dated data (TOML), validated on load.

A policy never lives in code: points, bands, effect periods, objection deadlines and the
benefit catalogue come from the file, and the file's SHA-256 is recorded with every grade so
that a grade can be reproduced and explained. Several versions coexist in a
:class:`PolicyRegistry`; :meth:`PolicyRegistry.policy_for` picks the one in force on a date.

File schema (``docs/grading.md`` has the full reference)::

    version = "pilot-2026.1"          # unique name, recorded with every grade
    effective_from = 2026-04-01       # the registry applies it from this day
    base_score = 100
    [classes]  A = 105  B = 95  C = 80          # minimum score per class, best first; D below
    [stars]    1 = 105 ... 5 = 130              # class A only; star 1 == class A minimum
    [effect_days] "+" = {轻微 = n, 一般 = n, 严重 = n}   # positive records (policy's own)
    [[regimes]]                                  # negative records: national regimes
    name = "..."; in_force_from = 2019-07-01     # chosen by the record's decision date
    periods = {一般 = {min_days = 92, max_days = 365}, ...}
    [objection] suspends_effect = true  decide_working_days = 5  escalate_after_working_days = 20
    [categories.<key>] name = "..."  direction = "+"|"-"  points = {轻微 = n, ...}
    [benefits.<key>] name = "..."  min_stars = 1..5  merchant_categories = [..]
                     basic_public_service = false

Invariants of a loaded :class:`Policy`: every severity has points, periods and a minimum no
greater than its maximum; regimes are ordered by start date with no two on the same day; class
and star bands are strictly ordered and contiguous; no benefit is a basic public service.
Older files with ``[effect_days] "-"`` instead of ``[[regimes]]`` still load (one regime whose
minimum equals its maximum: such a file never said when repair may start).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEVERITIES = ("轻微", "一般", "严重")
DIRECTIONS = ("+", "-")
CLASSES = ("A", "B", "C")
STAR_LEVELS = (1, 2, 3, 4, 5)
POLICY_DIR = Path(__file__).resolve().parent / "policy"
DEFAULT_POLICY = POLICY_DIR / "pilot-2026.1.toml"
#: No effect period may exceed this many days (a typo guard: 100 years).
MAX_PERIOD_DAYS = 36_500

_TOP_KEYS = {
    "version",
    "effective_from",
    "base_score",
    "classes",
    "stars",
    "effect_days",
    "regimes",
    "objection",
    "categories",
    "benefits",
    "regime",  # free text in files before regimes were tables
    "description",
}
_CATEGORY_KEYS = {"name", "direction", "points"}
_REGIME_KEYS = {"name", "in_force_from", "periods", "basis"}
_OBJECTION_KEYS = {"suspends_effect", "decide_working_days", "escalate_after_working_days"}
_BENEFIT_KEYS = {"name", "min_stars", "merchant_categories", "basic_public_service", "provider"}


class PolicyError(ValueError):
    """The policy file (or set of files) is not valid; the message names the file and the
    field to fix."""


@dataclass(frozen=True)
class Category:
    """A catalogue item: only these may be recorded. ``points`` are magnitudes (>= 0) per
    severity; the sign comes from ``direction``."""

    key: str
    name: str
    direction: str
    points: dict[str, int]


@dataclass(frozen=True)
class EffectPeriod:
    """How long a record affects the grade, counted in days from its decision date.

    Repair may be requested from ``decision_date + min_days``; the effect stops by itself at
    ``decision_date + max_days`` (the record no longer counts on that day).
    """

    basis: str
    min_days: int
    max_days: int


@dataclass(frozen=True)
class Regime:
    """A national disclosure regime for negative records, in force from ``in_force_from``
    until the next regime of the same policy starts."""

    name: str
    in_force_from: dt.date
    periods: dict[str, EffectPeriod]


@dataclass(frozen=True)
class ObjectionRules:
    """While an objection is verified the record has no effect (if ``suspends_effect``); a
    decision is due within ``decide_working_days``; without one after
    ``escalate_after_working_days`` the objection goes to the supervising authority."""

    suspends_effect: bool
    decide_working_days: int
    escalate_after_working_days: int


@dataclass(frozen=True)
class Benefit:
    """An incentive a merchant or office grants from ``min_stars`` stars up, in the listed
    merchant categories. Never a basic public service (checked on load)."""

    key: str
    name: str
    min_stars: int
    merchant_categories: tuple[str, ...]
    provider: str


@dataclass(frozen=True)
class Policy:
    """A loaded, validated policy file. ``sha256`` is the hash of the file's bytes."""

    version: str
    effective_from: dt.date
    base_score: int
    class_minimums: tuple[tuple[str, int], ...]
    star_minimums: tuple[tuple[int, int], ...]
    positive_effect_days: dict[str, int]
    regimes: tuple[Regime, ...]
    objection: ObjectionRules
    categories: dict[str, Category]
    benefits: dict[str, Benefit]
    sha256: str
    text: str = field(repr=False, compare=False)

    @property
    def objection_suspends_effect(self) -> bool:
        return self.objection.suspends_effect

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

    def points_for(self, category: str, direction: str, severity: str) -> int | None:
        """Signed points of a record, or ``None`` if the catalogue has no such item (unknown
        category, a direction other than the category's, or an unknown severity)."""
        item = self.categories.get(category)
        if item is None or item.direction != direction or severity not in item.points:
            return None
        magnitude = item.points[severity]
        return magnitude if direction == "+" else -magnitude

    def regime_for(self, decision_date: dt.date) -> Regime:
        """The regime in force on ``decision_date``; the earliest regime also covers every
        earlier decision."""
        chosen = self.regimes[0]
        for regime in self.regimes[1:]:
            if regime.in_force_from <= decision_date:
                chosen = regime
        return chosen

    def period_for(
        self, direction: str, severity: str, decision_date: dt.date
    ) -> EffectPeriod | None:
        """The effect period of a record, or ``None`` for an unknown direction or severity.

        Negative records take the period of the regime in force on their decision date;
        positive records the policy's own ``[effect_days] "+"`` (no minimum).
        """
        if severity not in SEVERITIES:
            return None
        if direction == "+":
            return EffectPeriod(f"policy {self.version}", 0, self.positive_effect_days[severity])
        if direction == "-":
            return self.regime_for(decision_date).periods[severity]
        return None

    def benefits_for(self, stars: int, merchant_category: str) -> tuple[Benefit, ...]:
        """The catalogue's benefits for a holder of ``stars`` at a merchant of
        ``merchant_category``, ordered by key."""
        return tuple(
            b
            for _, b in sorted(self.benefits.items())
            if stars >= b.min_stars and merchant_category in b.merchant_categories
        )


@dataclass(frozen=True)
class PolicyRegistry:
    """Policy versions side by side, ordered by ``effective_from`` (strictly increasing)."""

    policies: tuple[Policy, ...]

    def policy_for(self, day: dt.date) -> Policy:
        """The version in force on ``day``: the latest whose ``effective_from`` is on or
        before it.

        Raises:
            PolicyError: no version is in force yet on ``day``.
        """
        chosen: Policy | None = None
        for policy in self.policies:
            if policy.effective_from <= day:
                chosen = policy
        if chosen is None:
            first = self.policies[0]
            raise PolicyError(
                f"no policy is in force on {day.isoformat()}: the earliest, {first.version}, "
                f"takes effect {first.effective_from.isoformat()}"
            )
        return chosen

    def by_version(self, version: str) -> Policy:
        """Raises PolicyError if no loaded file has this version."""
        for policy in self.policies:
            if policy.version == version:
                return policy
        known = ", ".join(p.version for p in self.policies)
        raise PolicyError(f"no policy version {version!r} is loaded (loaded: {known})")

    def by_hash(self, sha256: str) -> Policy:
        """Raises PolicyError if no loaded file has this SHA-256 (the file was changed or
        removed since it graded: restore it from ``policy_documents``)."""
        for policy in self.policies:
            if policy.sha256 == sha256:
                return policy
        raise PolicyError(f"no loaded policy file has SHA-256 {sha256}")


def policy_in_force(policies: Policy | PolicyRegistry, day: dt.date) -> Policy:
    """The policy a decision taken on ``day`` applies: the registry's version in force on that
    day, or ``policies`` itself when the caller fixed one version. The chosen version's
    ``[[regimes]]`` then give each record the periods of the regime in force on the record's
    own decision date (:meth:`Policy.period_for`).

    Raises:
        PolicyError: a registry with no version in force yet on ``day``.
    """
    if isinstance(policies, PolicyRegistry):
        return policies.policy_for(day)
    return policies


def make_registry(policies: Iterable[Policy]) -> PolicyRegistry:
    """Orders ``policies`` by effective date.

    Raises:
        PolicyError: no policy, two files with the same version or hash under different
            contents, or two versions taking effect on the same day.
    """
    unique: dict[str, Policy] = {}
    for policy in policies:
        unique.setdefault(policy.sha256, policy)
    ordered = tuple(sorted(unique.values(), key=lambda p: (p.effective_from, p.version)))
    if not ordered:
        raise PolicyError("no policy file was given")
    versions = [p.version for p in ordered]
    for version in versions:
        if versions.count(version) > 1:
            raise PolicyError(f"two different files claim version {version!r}: rename one")
    for earlier, later in itertools.pairwise(ordered):
        if earlier.effective_from == later.effective_from:
            raise PolicyError(
                f"{earlier.version} and {later.version} both take effect "
                f"{later.effective_from.isoformat()}: give each version its own date"
            )
    return PolicyRegistry(ordered)


def load_registry(directory: Path = POLICY_DIR, extra: Iterable[Path] = ()) -> PolicyRegistry:
    """Loads every ``*.toml`` in ``directory`` plus the ``extra`` files.

    Raises:
        PolicyError: any file is invalid (see :func:`load_policy`), or the set is (see
            :func:`make_registry`).
    """
    paths = sorted(directory.glob("*.toml")) + list(extra)
    return make_registry(load_policy(path) for path in paths)


def load_policy(path: Path = DEFAULT_POLICY) -> Policy:
    """Reads and validates a policy file.

    Raises:
        PolicyError: unreadable file or TOML, a missing, unknown or mistyped field, unknown
            severities or directions, bands out of order, a period whose minimum exceeds its
            maximum, regimes out of order, or a benefit flagged as a basic public service.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid UTF-8 TOML: {exc}") from None
    where = str(path)
    _known_keys(data, _TOP_KEYS, where, "the top level")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip() or len(version) > 64:
        raise PolicyError(f"{where}: version must be a non-empty string of at most 64 chars")
    effective_from = data.get("effective_from")
    if not isinstance(effective_from, dt.date) or isinstance(effective_from, dt.datetime):
        raise PolicyError(f"{where}: effective_from must be a date (YYYY-MM-DD)")
    class_minimums, star_minimums = _bands(data, where)
    positive, regimes = _periods(data, where)
    return Policy(
        version=version,
        effective_from=effective_from,
        base_score=_int(data.get("base_score"), "base_score", where),
        class_minimums=class_minimums,
        star_minimums=star_minimums,
        positive_effect_days=positive,
        regimes=regimes,
        objection=_objection(data, where),
        categories=_categories(data, where),
        benefits=_benefits(data, where),
        sha256=hashlib.sha256(raw).hexdigest(),
        text=text,
    )


def _bands(
    data: dict[str, Any], where: str
) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[int, int], ...]]:
    classes = _table(data, "classes", where)
    if tuple(classes) != CLASSES:
        raise PolicyError(
            f"{where}: [classes] must list A, B and C in that order (D is below C), "
            f"got {', '.join(map(str, classes)) or 'nothing'}"
        )
    class_minimums = tuple((k, _int(v, f"classes.{k}", where)) for k, v in classes.items())
    values = [m for _, m in class_minimums]
    if any(a <= b for a, b in itertools.pairwise(values)):
        raise PolicyError(f"{where}: [classes] minimums must fall strictly from A to C")
    stars = _table(data, "stars", where)
    try:
        star_minimums = tuple(
            sorted((int(k), _int(v, f"stars.{k}", where)) for k, v in stars.items())
        )
    except ValueError:
        raise PolicyError(f"{where}: [stars] keys must be the levels 1 to 5") from None
    if tuple(s for s, _ in star_minimums) != STAR_LEVELS:
        raise PolicyError(f"{where}: [stars] must define levels 1 to 5")
    mins = [m for _, m in star_minimums]
    if any(a >= b for a, b in itertools.pairwise(mins)):
        raise PolicyError(f"{where}: [stars] minimums must rise strictly from 1 to 5")
    if mins[0] != class_minimums[0][1]:
        raise PolicyError(
            f"{where}: stars.1 ({mins[0]}) must equal classes.A ({class_minimums[0][1]}): "
            "class A is exactly the 1-5 star range"
        )
    return class_minimums, star_minimums


def _periods(data: dict[str, Any], where: str) -> tuple[dict[str, int], tuple[Regime, ...]]:
    effect = _table(data, "effect_days", where)
    _known_keys(effect, set(DIRECTIONS), where, "[effect_days]")
    positive_table = _table(effect, "+", f"{where}: effect_days")
    positive = {s: _days(positive_table.get(s), f'effect_days."+".{s}', where) for s in SEVERITIES}
    raw_regimes = data.get("regimes")
    if raw_regimes is not None and "-" in effect:
        raise PolicyError(
            f'{where}: negative periods come from [[regimes]]; remove [effect_days] "-"'
        )
    if raw_regimes is None:
        if "-" not in effect:
            raise PolicyError(f"{where}: [[regimes]] is missing (periods of negative records)")
        legacy = _table(effect, "-", f"{where}: effect_days")
        legacy_name = str(data.get("regime", "effect_days"))
        periods = {}
        for s in SEVERITIES:
            days = _days(legacy.get(s), f'effect_days."-".{s}', where)
            periods[s] = EffectPeriod(legacy_name, days, days)
        return positive, (Regime(legacy_name, dt.date.min, periods),)
    if not isinstance(raw_regimes, list) or not raw_regimes:
        raise PolicyError(f"{where}: [[regimes]] must be an array of tables with one or more")
    regimes = []
    for i, raw in enumerate(raw_regimes):
        here = f"regimes[{i}]"
        if not isinstance(raw, dict):
            raise PolicyError(f"{where}: {here} must be a table")
        _known_keys(raw, _REGIME_KEYS, where, here)
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise PolicyError(f"{where}: {here}.name must be a non-empty string")
        start = raw.get("in_force_from")
        if not isinstance(start, dt.date) or isinstance(start, dt.datetime):
            raise PolicyError(f"{where}: {here}.in_force_from must be a date (YYYY-MM-DD)")
        table = _table(raw, "periods", f"{where}: {here}")
        _known_keys(table, set(SEVERITIES), where, f"{here}.periods")
        periods = {}
        for s in SEVERITIES:
            period = table.get(s)
            if not isinstance(period, dict):
                raise PolicyError(f"{where}: {here}.periods.{s} is missing (min_days and max_days)")
            _known_keys(period, {"min_days", "max_days"}, where, f"{here}.periods.{s}")
            low = _days(period.get("min_days"), f"{here}.periods.{s}.min_days", where)
            high = _days(period.get("max_days"), f"{here}.periods.{s}.max_days", where)
            if low > high:
                raise PolicyError(
                    f"{where}: {here}.periods.{s}: min_days ({low}) is above max_days "
                    f"({high}); repair opens at the minimum and the effect stops at the maximum"
                )
            periods[s] = EffectPeriod(name, low, high)
        regimes.append(Regime(name, start, periods))
    for a, b in itertools.pairwise(regimes):
        if a.in_force_from >= b.in_force_from:
            raise PolicyError(
                f"{where}: [[regimes]] must be listed oldest first with distinct dates "
                f"({a.name} {a.in_force_from} comes before {b.name} {b.in_force_from})"
            )
    return positive, tuple(regimes)


def _objection(data: dict[str, Any], where: str) -> ObjectionRules:
    table = _table(data, "objection", where)
    _known_keys(table, _OBJECTION_KEYS, where, "[objection]")
    suspends = table.get("suspends_effect", True)
    if not isinstance(suspends, bool):
        raise PolicyError(f"{where}: objection.suspends_effect must be true or false")
    decide = _int(table.get("decide_working_days"), "objection.decide_working_days", where)
    escalate = _int(
        table.get("escalate_after_working_days"), "objection.escalate_after_working_days", where
    )
    if decide < 1 or escalate < decide:
        raise PolicyError(
            f"{where}: [objection] needs 1 <= decide_working_days ({decide}) <= "
            f"escalate_after_working_days ({escalate})"
        )
    return ObjectionRules(suspends, decide, escalate)


def _categories(data: dict[str, Any], where: str) -> dict[str, Category]:
    categories: dict[str, Category] = {}
    for key, cat in _table(data, "categories", where).items():
        if not isinstance(cat, dict):
            raise PolicyError(f"{where}: categories.{key} must be a table")
        _known_keys(cat, _CATEGORY_KEYS, where, f"categories.{key}")
        if len(key) > 64:
            raise PolicyError(f"{where}: categories.{key}: keys are at most 64 characters")
        direction = cat.get("direction")
        if not isinstance(direction, str) or direction not in DIRECTIONS:
            raise PolicyError(f"{where}: categories.{key}.direction must be '+' or '-'")
        points_table = _table(cat, "points", f"{where}: categories.{key}")
        _known_keys(points_table, set(SEVERITIES), where, f"categories.{key}.points")
        points = {
            s: _int(points_table.get(s), f"categories.{key}.points.{s}", where) for s in SEVERITIES
        }
        if any(p < 0 for p in points.values()):
            raise PolicyError(f"{where}: categories.{key}.points are magnitudes (>= 0)")
        categories[key] = Category(key, str(cat.get("name", key)), direction, points)
    if not categories:
        raise PolicyError(f"{where}: [categories] must list at least one catalogue item")
    return categories


def _benefits(data: dict[str, Any], where: str) -> dict[str, Benefit]:
    raw = data.get("benefits", {})
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: [benefits] must be a table of benefit tables")
    benefits: dict[str, Benefit] = {}
    for key, item in raw.items():
        here = f"benefits.{key}"
        if not isinstance(item, dict):
            raise PolicyError(f"{where}: {here} must be a table")
        _known_keys(item, _BENEFIT_KEYS, where, here)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise PolicyError(f"{where}: {here}.name must be a non-empty string")
        basic = item.get("basic_public_service")
        if not isinstance(basic, bool):
            raise PolicyError(
                f"{where}: {here}.basic_public_service must be stated (true or false)"
            )
        if basic:
            raise PolicyError(
                f"{where}: {here} ({name}) is a basic public service tied to a star level; "
                "stars are incentives only and must not gate basic public services or legal "
                "rights (NDRC 2019; 国办发〔2020〕49号): remove it from the catalogue"
            )
        min_stars = _int(item.get("min_stars"), f"{here}.min_stars", where)
        if min_stars not in STAR_LEVELS:
            raise PolicyError(f"{where}: {here}.min_stars must be a star level 1 to 5")
        merchants = item.get("merchant_categories")
        if (
            not isinstance(merchants, list)
            or not merchants
            or not all(isinstance(m, str) and m.strip() for m in merchants)
        ):
            raise PolicyError(
                f"{where}: {here}.merchant_categories must be a non-empty list of names"
            )
        provider = item.get("provider", "")
        if not isinstance(provider, str):
            raise PolicyError(f"{where}: {here}.provider must be a string")
        benefits[key] = Benefit(key, name, min_stars, tuple(merchants), provider)
    return benefits


def _known_keys(table: Mapping[str, Any], allowed: set[str], where: str, what: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PolicyError(
            f"{where}: unknown key(s) {', '.join(unknown)} in {what} "
            f"(allowed: {', '.join(sorted(allowed))})"
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


def _days(value: object, name: str, where: str) -> int:
    days = _int(value, name, where)
    if not 0 <= days <= MAX_PERIOD_DAYS:
        raise PolicyError(f"{where}: {name} must be between 0 and {MAX_PERIOD_DAYS} days")
    return days
