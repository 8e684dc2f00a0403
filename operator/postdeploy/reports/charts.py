"""Before/after line charts as inline SVG: no script, no external asset.

Called by ``postdeploy.reports.pages``. Pure. One chart is one series over time, with
the deployment marked by a vertical line; the mean before and after the deployment
are drawn as dashed lines and given in the caption, so the change is visible at a
glance and in numbers. The value axis has round ticks in the chart's unit
(``postdeploy.reports.units``: ``0.2%``, ``80 ms``, ``600 MiB``, ``20 req/s``); the
left margin is as wide as its longest label. The time axis spans the chart's window
(``Chart.start``/``end``, which ``postdeploy.reports.store`` centres on the
deployment), labelled with clock times in UTC.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Sequence

from postdeploy.reports import units
from postdeploy.reports.documents import Chart

__all__ = ["caption", "means", "svg"]

WIDTH, HEIGHT = 520, 228  # two side by side on a 70rem page
RIGHT, TOP, BOTTOM = 14, 22, 30
CHAR_WIDTH = 6.6  # of an 11px system-ui digit or letter, rounded up: labels never clip


def means(points: Sequence[tuple[float, float]], deployed: float | None) -> tuple[float | None, float | None]:
    if deployed is None:
        return None, None
    before = [v for t, v in points if t < deployed]
    after = [v for t, v in points if t >= deployed]
    return (
        sum(before) / len(before) if before else None,
        sum(after) / len(after) if after else None,
    )


def caption(chart: Chart, deployed: float | None) -> str:
    """``Error rate: mean before 0.2%, after 0.35%`` (the means in the chart's unit)."""
    before, after = means(chart.points, deployed)
    if deployed is None:
        return chart.title
    return (
        f"{chart.title}: mean before {units.format_value(before, chart.unit)}, "
        f"after {units.format_value(after, chart.unit)}"
    )


def _clock(epoch: float, span: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    if span < 3600:
        return moment.strftime("%H:%M:%S")
    if span < 2 * 86400:
        return moment.strftime("%H:%M")
    return moment.strftime("%b %d %H:%M")


def _window(
    chart: Chart, points: Sequence[tuple[float, float]], deployed: float | None
) -> tuple[float, float]:
    t0 = chart.start if chart.start is not None else points[0][0]
    t1 = chart.end if chart.end is not None else points[-1][0]
    t0, t1 = min(t0, points[0][0]), max(t1, points[-1][0])
    if deployed is not None:
        t0, t1 = min(t0, deployed), max(t1, deployed)
    return t0, t1


def svg(chart: Chart, deployed: float | None) -> str:
    points = sorted(chart.points)
    title = html.escape(chart.title)
    if len(points) < 2:
        return (
            f'<svg class="chart" role="img" aria-label="{title}: no data" viewBox="0 0 {WIDTH} 60" '
            f'width="{WIDTH}" height="60" xmlns="http://www.w3.org/2000/svg">'
            f'<text x="10" y="35" font-size="13">{title}: no data</text></svg>'
        )
    t0, t1 = _window(chart, points, deployed)
    values = [v for _, v in points]
    marks = units.ticks(min(0.0, min(values)), max(values), chart.unit)
    low, high = marks[0][0], marks[-1][0]
    left = round(10 + CHAR_WIDTH * max(len(label) for _, label in marks))
    span_t = (t1 - t0) or 1.0
    plot_w, plot_h = WIDTH - left - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return left + (t - t0) / span_t * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - (v - low) / ((high - low) or 1.0) * plot_h

    path = " ".join(f"{'M' if i == 0 else 'L'}{x(t):.1f},{y(v):.1f}" for i, (t, v) in enumerate(points))
    parts = [
        f'<svg class="chart" role="img" aria-label="{title}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{left}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafbfc" stroke="#d0d7de"/>',
    ]
    for value, label in marks:
        parts.append(
            f'<line x1="{left}" y1="{y(value):.1f}" x2="{left + plot_w}" y2="{y(value):.1f}" '
            'stroke="#eaeef2"/>'
            f'<text class="tick" x="{left - 5}" y="{y(value) + 4:.1f}" font-size="11" text-anchor="end">'
            f"{html.escape(label)}</text>"
        )
    parts.append(f'<text x="{left}" y="{HEIGHT - 8}" font-size="11">{_clock(t0, span_t)}</text>')
    parts.append(
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" font-size="11" text-anchor="end">'
        f"{_clock(t1, span_t)} UTC</text>"
    )
    before, after = means(points, deployed)
    if deployed is not None:
        dx = x(deployed)
        parts.append(
            f'<line class="deploy" x1="{dx:.1f}" y1="{TOP}" x2="{dx:.1f}" y2="{TOP + plot_h}" '
            'stroke="#cf222e" stroke-width="1.5"/>'
        )
        # Above the plot, so the series never hides it.
        parts.append(
            f'<text x="{dx:.1f}" y="{TOP - 6}" font-size="11" fill="#cf222e" '
            'text-anchor="middle">deploy</text>'
        )
        if left + 70 < dx < WIDTH - RIGHT - 110:  # room between the two end labels
            parts.append(
                f'<text x="{dx:.1f}" y="{HEIGHT - 8}" font-size="11" fill="#cf222e" text-anchor="middle">'
                f"{_clock(deployed, span_t)}</text>"
            )
        for mean, start, end in ((before, t0, deployed), (after, deployed, t1)):
            if mean is not None and end > start:
                parts.append(
                    f'<line x1="{x(start):.1f}" y1="{y(mean):.1f}" x2="{x(end):.1f}" y2="{y(mean):.1f}" '
                    'stroke="#8c959f" stroke-dasharray="4 3"/>'
                )
    parts.append(f'<path class="series" d="{path}" fill="none" stroke="#0969da" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)
