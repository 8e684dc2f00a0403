"""The condition language: what it accepts, how it evaluates, what it refuses.

Covers arithmetic and precedence, percent literals, short-circuiting, functions,
undecidable names (no baseline), static type errors, and that nothing reaches
Python's eval: attribute access, calls of unknown names and statements are refused.
"""

from __future__ import annotations

import pytest

from postdeploy.decisions import conditions
from postdeploy.kit import exceptions


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("value > 1", {"value": 2}, True),
        ("value > 1", {"value": 1}, False),
        ("value >= 1", {"value": 1}, True),
        ("value > 1%", {"value": 0.02}, True),
        ("value > 1%", {"value": 0.005}, False),
        ("1 + 2 * 3 == 7", {}, True),
        ("(1 + 2) * 3 == 9", {}, True),
        ("-value < 0", {"value": 3}, True),
        ("value > baseline * (1 + tolerance)", {"value": 1.2, "baseline": 1.0, "tolerance": 0.1}, True),
        ("value > baseline * (1 + tolerance)", {"value": 1.05, "baseline": 1.0, "tolerance": 0.1}, False),
        ("abs(value - baseline) / baseline > 0.5", {"value": 0.4, "baseline": 1.0}, True),
        ("max(value, 3) == 3 and min(value, 3) == 1", {"value": 1}, True),
        ("not value > 1", {"value": 0}, True),
        ("! (value > 1) || value == 7", {"value": 7}, True),
        ("value > 1 and value < 3 or value == 10", {"value": 10}, True),
        ("value != 1", {"value": 1.0000000000001}, False),
        ("pValue < 0.05 && lift < 0", {"pValue": 0.01, "lift": -0.2}, True),
        ("true", {}, True),
        ("1e-3 < 2E-3", {}, True),
    ],
)
def test_evaluates(text: str, env: dict[str, float], expected: bool) -> None:
    assert conditions.parse(text).evaluate(env) is expected


def test_names_are_collected() -> None:
    assert conditions.parse("value > baseline * (1 + tolerance)").names == {"value", "baseline", "tolerance"}


def test_missing_baseline_is_undecidable_not_false() -> None:
    expression = conditions.parse("value > baseline * 1.1")
    with pytest.raises(exceptions.Undecidable, match="baseline has no value"):
        expression.evaluate({"value": 5.0, "baseline": None})


def test_short_circuit_skips_missing_names() -> None:
    expression = conditions.parse("value > 1 or value > baseline")
    assert expression.evaluate({"value": 2.0}) is True
    with pytest.raises(exceptions.Undecidable):
        expression.evaluate({"value": 0.5})


def test_division_by_zero_is_undecidable() -> None:
    with pytest.raises(exceptions.Undecidable, match="division by zero"):
        conditions.parse("value / baseline > 1").evaluate({"value": 1.0, "baseline": 0.0})


def test_nan_is_undecidable() -> None:
    with pytest.raises(exceptions.Undecidable, match="NaN"):
        conditions.parse("value > 1").evaluate({"value": float("nan")})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("value >", "expected a value at column 8"),
        ("value > > 1", "column 9"),
        ("(value > 1", "expected ')'"),
        ("value + 1", "is a number, not a condition"),
        ("value > 1 and 2", "needs a comparison on each side"),
        ("not value", "needs a comparison"),
        ("value > (1 < 2)", "needs a number on each side"),
        ("foo(1) > 0", "unknown function 'foo'"),
        ("__import__(os) > 0", "unknown function '__import__'"),
        ("value.__class__ > 0 ; 1", "unexpected character ';'"),
        ("value > 'x'", "unexpected character"),
        ("abs(1, 2) > 0", "abs takes one argument"),
        ("", "empty condition"),
        ("value > 1 value", "unexpected 'value'"),
        ("x" * 2000, "at most"),
    ],
)
def test_refuses_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(exceptions.ConditionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        conditions.parse(text)


def test_dotted_names_are_plain_lookups_not_attribute_access() -> None:
    # "value.__class__" is one name looked up in the mapping; it is never an attribute.
    expression = conditions.parse("value.__class__ > 0")
    with pytest.raises(exceptions.Undecidable):
        expression.evaluate({"value": 1.0})
