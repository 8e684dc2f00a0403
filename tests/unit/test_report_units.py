"""The report's charts read at a glance: human units, labels inside the picture, the
deployment in the middle.

Covers:
- ``units.format_value``: ratios as percent, seconds as µs/ms/s, bytes in binary
  units, req/s and unknown units as given; three significant digits, never an exponent;
- ``units.ticks``: round steps (1, 2, 2.5, 5 times a power of ten) in one scale, covering the data;
- ``charts.svg``: axis labels in the chart's unit, a left margin wide enough for the
  longest label, the deployment line in the middle of a window from ``chart_window``;
- ``charts.caption`` and the HTML page: the means before and after in human units;
- ``store.chart_window``: as long after the deployment as before it, at least a minute,
  or the explicit ``window`` both ways;
- the default charts take their rate() window from parameter ``rateWindow`` (5m without).
"""

from __future__ import annotations

import datetime
import re

import pytest

from postdeploy.reports import charts, documents, pages, store, units

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (0.0021, "ratio", "0.21%"),
        (0.4, "ratio", "40%"),
        (0.0, "ratio", "0%"),
        (1e-7, "ratio", "0.00001%"),
        (-0.004, "ratio", "-0.4%"),
        (0.085, "s", "85 ms"),
        (0.0853, "s", "85.3 ms"),
        (2.5, "s", "2.5 s"),
        (0.00042, "s", "420 µs"),
        (6.63e8, "bytes", "632 MiB"),
        (512, "bytes", "512 B"),
        (3 * 1024**3, "bytes", "3 GiB"),
        (20.13, "req/s", "20.1 req/s"),
        (1234.6, "req/s", "1235 req/s"),
        (36, "h", "36 h"),
        (123456.0, "", "123456"),
        (None, "s", "-"),
    ],
)
def test_values_are_shown_in_human_units(value: float | None, unit: str, shown: str) -> None:
    assert units.format_value(value, unit) == shown


def test_numbers_never_use_exponents() -> None:
    for value in (1e-9, 3.3e-5, 6.63e8, 1e12, -2e-6):
        assert "e" not in units.number(value), value


@pytest.mark.parametrize(
    ("low", "high", "unit", "labels"),
    [
        (0.0, 0.0021, "ratio", ["0%", "0.1%", "0.2%", "0.3%"]),
        (0.0, 6.63e8, "bytes", ["0 MiB", "200 MiB", "400 MiB", "600 MiB", "800 MiB"]),
        (0.05, 0.11, "s", ["40 ms", "60 ms", "80 ms", "100 ms", "120 ms"]),
        (0.0, 1.3, "s", ["0 s", "0.5 s", "1 s", "1.5 s"]),
        (0.0, 20.13, "req/s", ["0 req/s", "10 req/s", "20 req/s", "30 req/s"]),
        (0.0, 0.9, "ratio", ["0%", "25%", "50%", "75%", "100%"]),
    ],
)
def test_ticks_are_round_in_one_scale_and_cover_the_data(
    low: float, high: float, unit: str, labels: list[str]
) -> None:
    marks = units.ticks(low, high, unit)
    assert [label for _, label in marks] == labels
    assert marks[0][0] <= low and marks[-1][0] >= high


def test_a_flat_series_still_gets_a_range() -> None:
    marks = units.ticks(5.0, 5.0, "req/s")
    assert marks[0][0] <= 5.0 < marks[-1][0]


def _window_chart(unit: str, values: list[float]) -> tuple[documents.Chart, float]:
    deployed = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    now = deployed + datetime.timedelta(minutes=3)
    start, end = store.chart_window(deployed, now)
    step = (now - start).total_seconds() / (len(values) - 1)
    points = tuple((start.timestamp() + i * step, v) for i, v in enumerate(values))
    chart = documents.Chart("Memory (working set)", unit, points, "q", start.timestamp(), end.timestamp())
    return chart, deployed.timestamp()


def test_chart_axes_are_in_human_units_and_fit_the_picture() -> None:
    chart, deployed = _window_chart("bytes", [6.2e8, 6.3e8, 6.63e8, 6.5e8, 6.4e8])
    drawn = charts.svg(chart, deployed)
    labels = re.findall(r'<text class="tick" x="([\d.]+)"[^>]*>([^<]+)</text>', drawn)
    assert [label for _, label in labels] == ["0 MiB", "200 MiB", "400 MiB", "600 MiB", "800 MiB"]
    assert "e+" not in drawn and "bytes" not in drawn
    # Right-aligned at x, each label needs about 6.6 px per character to its left.
    assert all(float(x) - charts.CHAR_WIDTH * len(label) >= 0 for x, label in labels)


def test_the_deployment_sits_in_the_middle_of_the_chart() -> None:
    chart, deployed = _window_chart("ratio", [0.002, 0.0021, 0.0019, 0.004, 0.0042, 0.0039, 0.004])
    drawn = charts.svg(chart, deployed)
    deploy_x = float(re.search(r'class="deploy" x1="([\d.]+)"', drawn).group(1))  # type: ignore[union-attr]
    left = float(re.search(r'<rect x="([\d.]+)"', drawn).group(1))  # type: ignore[union-attr]
    middle = left + (charts.WIDTH - charts.RIGHT - left) / 2
    assert abs(deploy_x - middle) < 1.5, (deploy_x, middle)
    assert "11:57:00" in drawn and "12:03:00 UTC" in drawn  # clock times of both ends


def test_captions_give_the_means_in_human_units() -> None:
    chart, deployed = _window_chart("ratio", [0.002, 0.002, 0.004, 0.004])
    assert charts.caption(chart, deployed) == "Memory (working set): mean before 0.2%, after 0.4%"
    latency = documents.Chart("p95 latency", "s", ((0, 0.08), (10, 0.09), (20, 0.12)), "q")
    assert charts.caption(latency, 15) == "p95 latency: mean before 85 ms, after 120 ms"


def test_the_html_page_uses_the_captions() -> None:
    chart, deployed = _window_chart("bytes", [6.2e8, 6.3e8, 6.63e8, 6.5e8])
    body = {
        "metadata": {"name": "r", "namespace": "shop"},
        "status": {"deployedAt": datetime.datetime.fromtimestamp(deployed, datetime.UTC).isoformat()},
    }
    page = pages.render(documents.build(body, [chart]))
    assert "mean before 596 MiB, after 626 MiB" in page
    assert "e+08" not in page


def test_the_chart_window_is_as_long_after_the_deployment_as_before() -> None:
    deployed = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    minute, hour = datetime.timedelta(minutes=1), datetime.timedelta(hours=1)
    assert store.chart_window(deployed, deployed + 72 * hour) == (deployed - 72 * hour, deployed + 72 * hour)
    assert store.chart_window(deployed, deployed + 10 * datetime.timedelta(seconds=1)) == (
        deployed - minute,
        deployed + minute,
    )
    assert store.chart_window(deployed, deployed + 72 * hour, 10 * minute) == (
        deployed - 10 * minute,
        deployed + 10 * minute,
    )


async def test_default_charts_rate_over_the_reviews_rate_window() -> None:
    deployed = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    values = {"namespace": "shop", "target": "checkout"}
    start, end = store.chart_window(deployed, deployed + datetime.timedelta(minutes=3))
    default = await store.fetch_charts(None, None, store.DEFAULT_CHARTS, values, start, end)  # type: ignore[arg-type]
    assert all("[5m]" in c.source for c in default[:3])
    compressed = await store.fetch_charts(
        None,  # type: ignore[arg-type]
        None,
        store.DEFAULT_CHARTS,
        {**values, "rateWindow": "30s"},
        start,
        end,
    )
    assert all("[30s]" in c.source and "[5m]" not in c.source for c in compressed[:3])
