"""Policy files (validation, regimes, benefits, registry) and the reference grader."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest

from issuer.grading import grade_records
from issuer.policy import (
    DEFAULT_POLICY,
    POLICY_DIR,
    PolicyError,
    load_policy,
    load_registry,
    make_registry,
)

AS_OF = dt.date(2026, 11, 28)
POLICY_2019 = POLICY_DIR / "pilot-2019.1.toml"


def rec(
    i: int, category: str, direction: str, severity: str, decided: dt.date, **kw: object
) -> SimpleNamespace:
    base = dict(
        id=i,
        category=category,
        direction=direction,
        severity=severity,
        decision_date=decided,
        legal_basis="basis",
        authority="authority",
        document_number=f"DOC-{i}",
        withdrawn_at=None,
        repaired_at=None,
        archived_at=None,
        objection_open=0,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def variant(tmp_path: Path, old: str, new: str, source: Path = DEFAULT_POLICY) -> Path:
    """A copy of a policy file with one text replacement (which must apply)."""
    text = source.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / f"variant-{abs(hash((old, new)))}.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


# -- policy files --------------------------------------------------------------------------


def test_default_policy_loads_with_hash() -> None:
    policy = load_policy()
    assert policy.version == "pilot-2026.1"
    assert policy.base_score == 100
    assert len(policy.sha256) == 64
    assert policy.classify(100) == ("B", 0)
    assert policy.classify(118) == ("A", 3)
    assert policy.classify(79) == ("D", 0)
    assert policy.classify(200) == ("A", 5)
    assert policy.objection_suspends_effect
    assert (policy.objection.decide_working_days, policy.objection.escalate_after_working_days) == (
        5,
        20,
    )


def test_both_shipped_policies_coexist_and_are_chosen_by_date() -> None:
    registry = load_registry()
    assert [p.version for p in registry.policies] == ["pilot-2019.1", "pilot-2026.1"]
    assert registry.policy_for(dt.date(2019, 7, 1)).version == "pilot-2019.1"
    assert registry.policy_for(dt.date(2026, 3, 31)).version == "pilot-2019.1"
    assert registry.policy_for(dt.date(2026, 4, 1)).version == "pilot-2026.1"
    with pytest.raises(PolicyError, match="no policy is in force on 2019-06-30"):
        registry.policy_for(dt.date(2019, 6, 30))
    new = registry.by_version("pilot-2026.1")
    assert registry.by_hash(new.sha256) is new
    with pytest.raises(PolicyError, match=r"no policy version 'pilot-2030\.1'"):
        registry.by_version("pilot-2030.1")
    with pytest.raises(PolicyError, match="SHA-256"):
        registry.by_hash("00" * 32)


def test_regime_is_chosen_by_the_decision_date() -> None:
    policy = load_policy()
    before = policy.period_for("-", "严重", dt.date(2026, 3, 31))
    after = policy.period_for("-", "严重", dt.date(2026, 4, 1))
    ancient = policy.period_for("-", "一般", dt.date(2015, 1, 1))
    assert before is not None and after is not None and ancient is not None
    assert (before.min_days, before.max_days) == (184, 1095)  # 527号: 6 months - 3 years
    assert (after.min_days, after.max_days) == (366, 1095)  # 2026: 1 year - 3 years
    assert "2019" in before.basis and "2026" in after.basis
    assert "2019" in ancient.basis  # the earliest regime covers older decisions
    positive = policy.period_for("+", "一般", dt.date(2026, 4, 1))
    assert positive is not None and positive.basis == "policy pilot-2026.1"
    assert policy.period_for("-", "未知", dt.date(2026, 4, 1)) is None
    assert policy.period_for("?", "一般", dt.date(2026, 4, 1)) is None


def test_points_come_from_the_catalogue_with_the_category_direction() -> None:
    policy = load_policy()
    assert policy.points_for("admin_penalty", "-", "一般") == -10
    assert policy.points_for("honour", "+", "严重") == 20
    assert policy.points_for("admin_penalty", "+", "一般") is None  # wrong direction
    assert policy.points_for("admin_penalty", "-", "未知") is None
    assert policy.points_for("littering", "-", "一般") is None


def test_benefit_catalogue_maps_stars_and_merchant_categories() -> None:
    policy = load_policy()
    assert [b.key for b in policy.benefits_for(3, "bank")] == ["bank_green_channel"]
    assert policy.benefits_for(2, "bank") == ()
    assert [b.key for b in policy.benefits_for(5, "library")] == ["library_deposit_waiver"]
    assert policy.benefits_for(5, "school") == ()


def test_a_basic_public_service_as_a_star_benefit_refuses_to_load(tmp_path: Path) -> None:
    """The pilot's 2017 "priority public-school choice for 5★" must never be loadable."""
    school = (
        "[benefits.school_priority]\n"
        'name = "义务教育阶段公办学校优先择校"\n'
        "min_stars = 5\n"
        'merchant_categories = ["school"]\n'
        "basic_public_service = true\n"
    )
    path = tmp_path / "school.toml"
    path.write_text(DEFAULT_POLICY.read_text(encoding="utf-8") + "\n" + school, encoding="utf-8")
    with pytest.raises(PolicyError, match=r"benefits\.school_priority .* basic public service"):
        load_policy(path)
    unflagged = school.replace("basic_public_service = true\n", "")
    path.write_text(DEFAULT_POLICY.read_text(encoding="utf-8") + "\n" + unflagged, encoding="utf-8")
    with pytest.raises(PolicyError, match="basic_public_service must be stated"):
        load_policy(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("base_score = 100", 'base_score = "x"', "base_score must be an integer"),
        (
            "min_days = 184, max_days = 1095",
            "min_days = 2000, max_days = 1095",
            r"regimes\[0\]\.periods\.严重: min_days \(2000\) is above max_days \(1095\)",
        ),
        ("in_force_from = 2026-04-01", "in_force_from = 2019-01-01", "oldest first"),
        ("suspends_effect = true", "suspend_effect = true", "unknown key.*suspend_effect"),
        ("decide_working_days = 5", "decide_working_days = 30", "decide_working_days"),
        ("1 = 105", "1 = 106", r"stars\.1 \(106\) must equal classes\.A \(105\)"),
        ("B = 95", "B = 110", "minimums must fall strictly"),
        (
            '"+" = { "轻微" = 1095,',
            '"-" = { "轻微" = 0, "一般" = 1, "严重" = 2 }\n"+" = { "轻微" = 1095,',
            'remove \\[effect_days\\] "-"',
        ),
        ("max_days = 1095 } # 1 year", "max_days = 99999 } # 1 year", "between 0 and 36500"),
        ('direction = "-"', 'direction = "x"', "direction must be"),
        (
            "effective_from = 2026-04-01",
            'effective_from = "2026-04-01"',
            "effective_from must be a date",
        ),
    ],
)
def test_bad_policy_says_what_to_fix(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as caught:
        load_policy(variant(tmp_path, old, new))
    assert "variant-" in str(caught.value)  # names the file


def test_unreadable_or_non_toml_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("not toml [", encoding="utf-8")
    with pytest.raises(PolicyError, match="TOML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")


def test_legacy_effect_days_file_still_loads(tmp_path: Path) -> None:
    """Files from before [[regimes]]: one regime whose minimum is its maximum."""
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    start, end = text.index("[[regimes]]"), text.index("# Pilot rule")
    legacy = text[:start] + text[end:]
    legacy = legacy.replace(
        '"+" = { "轻微" = 1095,',
        '"-" = { "轻微" = 0, "一般" = 365, "严重" = 1095 }\n"+" = { "轻微" = 1095,',
    )
    path = tmp_path / "legacy.toml"
    path.write_text(legacy, encoding="utf-8")
    policy = load_policy(path)
    period = policy.period_for("-", "一般", dt.date(2026, 6, 1))
    assert period is not None and (period.min_days, period.max_days) == (365, 365)


def test_registry_refuses_ambiguous_sets(tmp_path: Path) -> None:
    same_day = variant(tmp_path, 'version = "pilot-2026.1"', 'version = "pilot-2026.2"')
    with pytest.raises(PolicyError, match="both take effect 2026-04-01"):
        make_registry([load_policy(), load_policy(same_day)])
    same_version = variant(tmp_path, "effective_from = 2026-04-01", "effective_from = 2027-01-01")
    with pytest.raises(PolicyError, match=r"claim version 'pilot-2026\.1'"):
        make_registry([load_policy(), load_policy(same_version)])
    with pytest.raises(PolicyError, match="no policy file"):
        make_registry([])


# -- the reference grader ------------------------------------------------------------------


def test_grade_explains_every_record() -> None:
    policy = load_policy()
    rows = [
        rec(1, "volunteering", "+", "一般", dt.date(2026, 3, 5)),
        rec(2, "honour", "+", "一般", dt.date(2026, 5, 20)),
        rec(3, "admin_penalty", "-", "一般", dt.date(2024, 6, 3)),  # effect ended
        rec(4, "tax_arrears", "-", "严重", dt.date(2026, 8, 1), objection_open=1),
        rec(
            5,
            "court_judgment_default",
            "-",
            "一般",
            dt.date(2026, 1, 2),
            withdrawn_at=dt.datetime(2026, 2, 1),
        ),
        rec(
            6,
            "admin_penalty",
            "-",
            "严重",
            dt.date(2026, 2, 1),
            repaired_at=dt.datetime(2026, 9, 1),
        ),
        rec(7, "littering", "-", "一般", dt.date(2026, 2, 1)),
        rec(8, "admin_penalty", "-", "轻微", dt.date(2026, 11, 1)),
        rec(9, "honour", "+", "严重", dt.date(2026, 12, 1)),
        rec(10, "honour", "+", "轻微", dt.date(2026, 7, 1), archived_at=dt.datetime(2026, 8, 1)),
    ]
    grade = grade_records(policy, rows, AS_OF)
    assert grade.score == 115
    assert (grade.grade_class, grade.stars) == ("A", 3)
    codes = {line.record_id: line.reason_code for line in grade.lines}
    assert codes == {
        1: "counts",
        2: "counts",
        3: "expired",
        4: "objection",
        5: "withdrawn",
        6: "repaired",
        7: "not_in_catalogue",
        8: "expired",  # 轻微 negative: not published, no effect at all under both regimes
        9: "future",
        10: "archived",
    }
    line3 = next(line for line in grade.lines if line.record_id == 3)
    assert line3.points == -10 and not line3.counts and line3.reason == "effect period ended"
    assert line3.effect_until == "2025-06-03" and "2019" in (line3.effect_basis or "")
    assert [line.record_id for line in grade.lines] == [3, 5, 6, 7, 1, 2, 10, 4, 8, 9]


def test_same_input_same_output() -> None:
    policy = load_policy()
    rows = [
        rec(i, "volunteering", "+", "轻微", dt.date(2026, 1, 1) + dt.timedelta(days=i))
        for i in range(30)
    ]
    assert grade_records(policy, rows, AS_OF) == grade_records(policy, list(reversed(rows)), AS_OF)


def test_negative_record_counts_until_the_regime_maximum() -> None:
    policy = load_policy()
    decided = dt.date(2026, 6, 1)
    rows = [rec(1, "court_judgment_default", "-", "一般", decided)]
    assert grade_records(policy, rows, AS_OF).grade_class == "D"
    last_day = decided + dt.timedelta(days=364)
    assert grade_records(policy, rows, last_day).score == 70
    assert grade_records(policy, rows, last_day + dt.timedelta(days=1)).score == 100


def test_objections_suspend_only_if_the_policy_says_so(tmp_path: Path) -> None:
    rows = [rec(1, "tax_arrears", "-", "严重", dt.date(2026, 8, 1), objection_open=1)]
    assert grade_records(load_policy(), rows, AS_OF).score == 100
    strict = load_policy(variant(tmp_path, "suspends_effect = true", "suspends_effect = false"))
    grade = grade_records(strict, rows, AS_OF)
    assert grade.score == 75 and grade.lines[0].reason_code == "counts"


def test_the_policy_in_force_changes_the_points() -> None:
    rows = [rec(1, "admin_penalty", "-", "一般", dt.date(2026, 6, 1))]
    assert grade_records(load_policy(), rows, AS_OF).score == 90
    assert grade_records(load_policy(POLICY_2019), rows, AS_OF).score == 85
    blood = [rec(2, "blood_donation", "+", "一般", dt.date(2026, 6, 1))]
    line = grade_records(load_policy(POLICY_2019), blood, AS_OF).lines[0]
    assert line.reason_code == "not_in_catalogue" and line.effect_until is None
