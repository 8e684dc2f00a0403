"""The sample app's traffic simulation, without its servers: ``tick`` and the settings."""

from __future__ import annotations

import pytest

from testbed.sampleapp import SampleApp, Settings


def _counts(app: SampleApp) -> tuple[float, float]:
    """(5xx responses, all responses) counted so far."""
    errors = total = 0.0
    for metric in app.registry.collect():
        for sample in metric.samples:
            if sample.name == "http_requests_total":
                total += sample.value
                errors += sample.value if sample.labels["code"] != "200" else 0.0
    return errors, total


def test_an_even_spread_fails_exactly_the_share_of_every_run_of_requests() -> None:
    app = SampleApp(settings=Settings(rps=1.0, error_rate=0.05, error_spread="even"))
    seen = []
    for _ in range(30):
        app.tick(10.0)  # 10 requests, half a failure a tick
        seen.append(_counts(app))
    assert seen[-1] == (15.0, 300.0)
    failures = [round(b[0] - a[0]) for a, b in zip([(0.0, 0.0), *seen], seen, strict=False)]
    assert set(failures) == {0, 1} and sum(failures[:20]) == 10
    app.update({"error_rate": 0.25})
    before = _counts(app)[0]
    app.tick(40.0)
    assert _counts(app)[0] - before == 10.0


def test_a_random_spread_draws_each_request() -> None:
    app = SampleApp(settings=Settings(rps=1.0, error_rate=0.05), seed=3)
    app.tick(20_000.0)
    errors, total = _counts(app)
    assert total == 20_000.0
    assert 800 < errors < 1_200  # 1,000 expected, sd 31


def test_an_unknown_spread_is_refused_and_changes_nothing() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="error_spread must be one of random, even"):
        settings.updated({"error_spread": "bursty", "error_rate": 0.5})
    assert settings.error_spread == "random"
    assert settings.updated({"error_spread": "even"}).error_spread == "even"
