from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest

from issuer.grading import grade_records
from issuer.policy import DEFAULT_POLICY, PolicyError, load_policy

AS_OF = dt.date(2026, 11, 28)


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
        document_number=f"DOC-{i}",
        withdrawn_at=None,
        repaired_at=None,
        objection_open=0,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def test_default_policy_loads_with_hash() -> None:
    policy = load_policy()
    assert policy.version == "pilot-2026.1"
    assert policy.base_score == 100
    assert len(policy.sha256) == 64
    assert policy.classify(100) == ("B", 0)
    assert policy.classify(118) == ("A", 3)
    assert policy.classify(79) == ("D", 0)
    assert policy.classify(200) == ("A", 5)


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
    ]
    grade = grade_records(policy, rows, AS_OF)
    assert grade.score == 115
    assert (grade.grade_class, grade.stars) == ("A", 3)
    reasons = {line.record_id: line.reason for line in grade.lines}
    assert reasons[1] == "counts"
    assert reasons[3] == "effect period ended"
    assert "objection" in reasons[4]
    assert "withdrawn" in reasons[5]
    assert [line.counts for line in grade.lines].count(True) == 2


def test_same_input_same_output() -> None:
    policy = load_policy()
    rows = [
        rec(i, "volunteering", "+", "轻微", dt.date(2026, 1, 1) + dt.timedelta(days=i))
        for i in range(30)
    ]
    assert grade_records(policy, rows, AS_OF) == grade_records(policy, list(reversed(rows)), AS_OF)


def test_negative_record_lowers_the_grade_until_its_period_ends() -> None:
    policy = load_policy()
    rows = [rec(1, "court_judgment_default", "-", "一般", dt.date(2026, 6, 1))]
    assert grade_records(policy, rows, AS_OF).grade_class == "D"
    later = grade_records(policy, rows, dt.date(2027, 6, 1))
    assert later.score == 100


def test_bad_policy_says_what_to_fix(tmp_path: Path) -> None:
    text = DEFAULT_POLICY.read_text(encoding="utf-8").replace(
        "base_score = 100", 'base_score = "x"'
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError, match="base_score must be an integer"):
        load_policy(bad)
    bad.write_text("not toml [", encoding="utf-8")
    with pytest.raises(PolicyError, match="TOML"):
        load_policy(bad)
