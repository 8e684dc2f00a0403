"""The report as one self-contained HTML page: inline CSS and SVG, no script, no links out.

Called by ``postdeploy.reports.store`` (``report.html`` in the report ConfigMap) and by
``kubectl postdeploy report NAME --format html``. Pure. The page opens offline in any
browser; its charts are ``<svg>`` elements drawn by ``postdeploy.reports.charts``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from postdeploy.reports import charts
from postdeploy.reports.documents import CHECK_COLUMNS, Report, check_rows, fmt

__all__ = ["render"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:70rem;
color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.Passed,.yes{color:#1a7f37}.Failed,.NO,.RolledBack{color:#cf222e;font-weight:600}
.Error,.Inconclusive,.unknown{color:#9a6700}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.charts figure{margin:0;max-width:520px}
figcaption{font-size:.85rem;color:#59636e}figcaption code{word-break:break-all}
.verdict{font-size:1.1rem;font-weight:600}
"""


def _e(value: object) -> str:
    return html.escape("-" if value is None or value == "" else str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], classes: int | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            css = f' class="{_e(value)}"' if classes is not None and index == classes else ""
            cells.append(f"<td{css}>{_e(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _list(items: Iterable[str], empty: str) -> str:
    lines = [f"<li>{_e(i)}</li>" for i in items]
    return "<ul>" + ("".join(lines) or f"<li>{_e(empty)}</li>") + "</ul>"


def _charts(report: Report) -> str:
    if not report.charts:
        return "<p>No chart data.</p>"
    figures = []
    for chart in report.charts:
        caption = charts.caption(chart, report.deployed_epoch)
        figures.append(
            f"<figure>{charts.svg(chart, report.deployed_epoch)}<figcaption>{_e(caption)}<br>"
            f"<code>{_e(chart.source)}</code></figcaption></figure>"
        )
    return f'<div class="charts">{"".join(figures)}</div>'


def render(report: Report) -> str:
    final = report.final
    impact = report.impact or {}
    sections = [
        f"<h1>Deployment Summary - {_e(report.version)}</h1>",
        _table(
            ["Review", "Target", "Version", "Deployed at", "Phase", "Verdict", "Generated"],
            [
                [
                    f"{report.namespace}/{report.name}",
                    report.target,
                    report.version,
                    report.deployed_at,
                    report.phase,
                    report.verdict,
                    report.generated_at,
                ]
            ],
            classes=5,
        ),
        "<h2>Before and after</h2>",
        _charts(report),
        "<h2>What Went Well</h2>",
        _list(report.went_well, "nothing recorded yet"),
        "<h2>What Could Be Improved</h2>",
        _list(report.improve, "nothing"),
        "<h2>Action Items</h2>",
        _table(
            ["Priority", "Action", "Owner", "Source", "Status"],
            ([i.priority, i.action, i.owner, i.source, "Open"] for i in report.action_items),
        ),
        "<h2>Checks</h2>",
        _table(
            CHECK_COLUMNS,
            check_rows(report),
            classes=2,
        ),
    ]
    if report.remediation:
        sections += [
            "<h2>Error Remediation</h2>",
            _table(
                ["Type", "Count", "Check", "Cause", "Fix", "Priority"],
                (
                    [r["type"], fmt(r["count"]), r["check"], r["cause"], r["fix"], r["priority"]]
                    for r in report.remediation
                ),
            ),
        ]
    if report.notes:
        sections += [
            "<h2>Notes, Lessons and Runbook Updates</h2>",
            _table(
                ["Kind", "Text", "Category / action", "Priority", "By", "At"],
                (
                    [
                        n["kind"],
                        n["text"],
                        n.get("category") or n.get("action"),
                        n.get("priority"),
                        n.get("by"),
                        n.get("at"),
                    ]
                    for n in report.notes
                ),
            ),
        ]
    sections.append("<h2>Final Review</h2>")
    if final is None:
        sections.append("<p>Not yet: the final review runs when every phase has completed.</p>")
    else:
        sections += [
            f'<p class="verdict">Final verdict: <span class="{_e(final.verdict)}">'
            f"{_e(final.verdict)}</span></p>",
            "<h3>Deployment SLOs</h3>",
            _table(
                ["SLO", "Value", "Target", "Met", "Detail"],
                (
                    [s.name, s.value, s.target, {True: "yes", False: "NO", None: "unknown"}[s.met], s.detail]
                    for s in final.slos
                ),
                classes=3,
            ),
        ]
    sections += [
        "<h3>Customer Impact</h3>",
        _table(
            ["Support tickets", "Complaints", "Positive feedback"],
            [[impact.get("tickets"), impact.get("complaints"), impact.get("positive")]],
        ),
    ]
    if final is not None:
        sections += [
            "<h3>Sign-offs</h3>",
            _table(
                ["Role", "Signed", "Name", "Date", "Notes"],
                ([s.role, "yes" if s.signed else "no", s.by, s.at, s.notes] for s in final.signoffs),
                classes=1,
            ),
        ]
    if report.cleanup:
        sections += [
            "<h2>Cleanup</h2>",
            _table(
                ["Kind", "Name", "Why", "Result"],
                ([o.get("kind"), o.get("name"), o.get("why"), o.get("result")] for o in report.cleanup),
            ),
        ]
    if report.postmortem:
        pm = report.postmortem
        sections += [
            f"<h2>Post-mortem ({_e(pm['trigger'])})</h2>",
            "<p>To be completed by the team; schedule the meeting within 5 working days.</p>",
            "<h3>Timeline</h3>",
            _table(["When", "What"], pm["timeline"]),
            "<h3>Root cause</h3><p>-</p><h3>What went wrong</h3>",
            _list((f"check {n} failed" for n in pm["failed"]), "-"),
        ]
    title = f"Deployment report {report.namespace}/{report.name} {report.version}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(sections)}</body></html>\n"
    )
