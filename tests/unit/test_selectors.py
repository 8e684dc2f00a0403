"""Label selectors for sharding: each term kind, conjunction, and refused syntax."""

from __future__ import annotations

import pytest

from postdeploy.decisions import selectors


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {}, True),
        ("shard=a", {"shard": "a"}, True),
        ("shard==a", {"shard": "a"}, True),
        ("shard=a", {"shard": "b"}, False),
        ("shard=a", {}, False),
        ("tier!=batch", {"tier": "web"}, True),
        ("tier!=batch", {}, True),
        ("tier!=batch", {"tier": "batch"}, False),
        ("legacy", {"legacy": ""}, True),
        ("legacy", {}, False),
        ("!legacy", {}, True),
        ("!legacy", {"legacy": "yes"}, False),
        ("shard=a, !legacy, example.com/team", {"shard": "a", "example.com/team": "x"}, True),
        ("shard=a,!legacy", {"shard": "a", "legacy": "1"}, False),
    ],
)
def test_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert selectors.parse(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["shard in (a,b)", "=a", "a=b=c", "!"])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid label selector term"):
        selectors.parse(text)
