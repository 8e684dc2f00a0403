"""Before/after line charts as inline SVG: no script, no external asset.

Called by ``postdeploy.reports.pages``. Pure. One chart is one series over time, with
the deployment marked by a vertical line; the mean before and after the deployment
are drawn as dashed lines and given in the caption, so the change is visible at a
glance and in numbers.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Sequence

from postdeploy.reports.documents import Chart, fmt

__all__ = ["means", "svg"]

WIDTH, HEIGHT = 560, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 30


def means(points: Sequence[tuple[float, float]], deployed: float | None) -> tuple[float | None, float | None]:
    if deployed is None:
        return None, None
    before = [v for t, v in points if t < deployed]
    after = [v for t, v in points if t >= deployed]
    return (
        sum(before) / len(before) if before else None,
        sum(after) / len(after) if after else None,
    )


def _clock(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%H:%M")


def svg(chart: Chart, deployed: float | None) -> str:
    points = sorted(chart.points)
    title = html.escape(chart.title)
    if len(points) < 2:
        return (
            f'<svg class="chart" role="img" aria-label="{title}: no data" viewBox="0 0 {WIDTH} 60" '
            f'width="{WIDTH}" height="60" xmlns="http://www.w3.org/2000/svg">'
            f'<text x="10" y="35" font-size="13">{title}: no data</text></svg>'
        )
    t0, t1 = points[0][0], points[-1][0]
    if deployed is not None:
        t0, t1 = min(t0, deployed), max(t1, deployed)
    values = [v for _, v in points]
    low, high = min(0.0, min(values)), max(values)
    if high == low:
        high = low + 1.0
    span_t = (t1 - t0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - t0) / span_t * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - (v - low) / (high - low) * plot_h

    path = " ".join(f"{'M' if i == 0 else 'L'}{x(t):.1f},{y(v):.1f}" for i, (t, v) in enumerate(points))
    parts = [
        f'<svg class="chart" role="img" aria-label="{title}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafbfc" stroke="#d0d7de"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = low + (high - low) * fraction
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" font-size="11" text-anchor="end">'
            f"{html.escape(fmt(value))}</text>"
        )
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 8}" font-size="11">{_clock(t0)}</text>')
    parts.append(
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" font-size="11" text-anchor="end">{_clock(t1)}</text>'
    )
    before, after = means(points, deployed)
    if deployed is not None:
        dx = x(deployed)
        parts.append(
            f'<line class="deploy" x1="{dx:.1f}" y1="{TOP}" x2="{dx:.1f}" y2="{TOP + plot_h}" '
            'stroke="#cf222e" stroke-width="1.5"/>'
        )
        # The label sits right of the line, or left of it near the right edge.
        label_x, anchor = (dx + 4, "start") if dx < WIDTH - RIGHT - 50 else (dx - 4, "end")
        parts.append(
            f'<text x="{label_x:.1f}" y="{TOP + 12}" font-size="11" fill="#cf222e" '
            f'text-anchor="{anchor}">deploy</text>'
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
