"""A backtest as a section of the HTML report, and as a page of its own.

Called by ``kubectl postdeploy backtest -o html``. Pure. Same look as the review's
report (``postdeploy.reports.pages``: its stylesheet and table helper): a strip of
the releases coloured by verdict, the release table (verdict, first failing check,
when, value vs baseline), the per-check counts, and the checks that were not
replayed with why. Self-contained: inline CSS and SVG, no script, no links out.
"""

from __future__ import annotations

import html

from postdeploy.backtests import summaries
from postdeploy.backtests.replays import Backtest
from postdeploy.reports import pages

__all__ = ["page", "section", "strip"]

_COLOURS = {"Failed": "#cf222e", "Inconclusive": "#9a6700", "Passed": "#1a7f37", "Incomplete": "#8c959f"}
_CELL = 14


def _e(value: object) -> str:
    return html.escape("-" if value is None or value == "" else str(value))


def strip(backtest: Backtest) -> str:
    """One square per release, oldest first, coloured by its group; titles say the verdict."""
    squares = []
    for index, outcome in enumerate(backtest.releases):
        group = summaries.group(outcome)
        first = outcome.first_failure
        title = f"{outcome.release.at:%Y-%m-%d %H:%M} UTC: {outcome.verdict}"
        if first is not None:
            title += f" ({first.name})"
        squares.append(
            f'<rect x="{index * (_CELL + 2)}" y="0" width="{_CELL}" height="{_CELL}" '
            f'fill="{_COLOURS[group]}"><title>{_e(title)}</title></rect>'
        )
    width = max(1, len(backtest.releases) * (_CELL + 2))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_CELL}" role="img" '
        f'aria-label="releases by verdict, oldest first">{"".join(squares)}</svg>'
    )


def section(backtest: Backtest) -> str:
    """The backtest as an HTML fragment (a ``<section>``) for a report page."""
    target = backtest.target
    counts = summaries.summary(backtest)
    rows = []
    for outcome, row in zip(backtest.releases, summaries.release_rows(backtest), strict=True):
        group = summaries.group(outcome)
        cells = "".join(
            f'<td class="{group}">{_e(v)}</td>' if i == 2 else f"<td>{_e(v)}</td>" for i, v in enumerate(row)
        )
        rows.append(f"<tr>{cells}</tr>")
    head = "".join(f"<th>{_e(h)}</th>" for h in summaries.RELEASE_COLUMNS)
    releases = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    states = ("Failed", "Error", "Inconclusive", "Passed", "Skipped", "Running")
    per_check = pages._table(
        ("Check", *states), [[name, *(c.get(s, 0) for s in states)] for name, c in counts["checks"].items()]
    )
    groups = ", ".join(f"{n} {name}" for name, n in counts["releases"].items())
    not_replayed = pages._table(
        ("Check", "Phase", "Provider", "Why not"),
        [[n.check, n.phase, n.provider, n.reason] for n in backtest.not_replayed],
    )
    queries = backtest.queries
    return "".join(
        [
            "<section><h2>Backtest</h2>",
            f"<p>{_e(backtest.template or 'The review')} replayed on {_e(target.kind)} "
            f"{_e(target.namespace)}/{_e(target.name)} for {len(backtest.releases)} release(s), "
            f"up to {backtest.until:%Y-%m-%d %H:%M} UTC.</p>",
            f'<p class="verdict">Releases: {_e(groups)}</p>',
            f"<figure>{strip(backtest)}<figcaption>releases, oldest first: red Failed, amber "
            "Inconclusive, green Passed, grey not complete yet</figcaption></figure>",
            "<h3>Releases</h3>",
            releases,
            "<h3>Per check</h3>",
            per_check,
            "<h3>Not replayed</h3>",
            not_replayed if backtest.not_replayed else "<p>Every check was replayed.</p>",
            f"<p>{queries.get('instant', 0) + queries.get('range', 0)} Prometheus queries "
            f"({queries.get('range', 0)} range, {queries.get('instant', 0)} instant) "
            f"in {backtest.seconds:.1f} s.</p></section>",
        ]
    )


def page(backtest: Backtest) -> str:
    """A self-contained HTML page holding the section."""
    target = backtest.target
    title = f"Backtest: {target.kind}/{target.name}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{pages._CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{section(backtest)}</body></html>\n"
    )
