"""The report as Markdown: what ``kubectl postdeploy report NAME`` prints by default.

Called by ``postdeploy.reports.store`` (kept in the report ConfigMap as ``report.md``)
and by the plugin. Pure. Sections follow the checklist: summary, action items,
checks, error remediation, notes, final review (SLOs, customer impact, sign-offs),
cleanup, post-mortem.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from postdeploy.reports.documents import CHECK_COLUMNS, Report, check_rows, fmt

__all__ = ["cell", "render", "table"]


def cell(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def _bullets(items: Iterable[str], empty: str) -> list[str]:
    lines = [f"- {item}" for item in items]
    return lines or [f"- {empty}"]


def render(report: Report) -> str:
    out = [
        f"# Deployment Summary - {report.version}",
        "",
        f"- Review: `{report.namespace}/{report.name}`",
        f"- Target: {report.target}",
        f"- Version: {report.version}",
        f"- Deployed at: {report.deployed_at}",
        f"- Phase: {report.phase}",
        f"- Verdict: **{report.verdict}**",
        f"- Generated: {report.generated_at}",
        "",
        "## What Went Well",
        *_bullets(report.went_well, "nothing recorded yet"),
        "",
        "## What Could Be Improved",
        *_bullets(report.improve, "nothing"),
        "",
        "## Action Items",
        *table(
            ["Priority", "Action", "Owner", "Source", "Status"],
            ([i.priority, i.action, i.owner, i.source, "Open"] for i in report.action_items),
        ),
        "",
        "## Checks",
        *table(
            CHECK_COLUMNS,
            check_rows(report),
        ),
    ]
    if report.remediation:
        out += [
            "",
            "## Error Remediation",
            *table(
                ["Type", "Count", "Check", "Cause", "Fix", "Priority"],
                (
                    [r["type"], fmt(r["count"]), r["check"], r["cause"], r["fix"], r["priority"]]
                    for r in report.remediation
                ),
            ),
        ]
    for kind, title in (
        ("lesson", "Lessons Learned"),
        ("runbook", "Runbook Updates"),
        ("tech-debt", "Technical Debt"),
        ("improvement", "Improvements"),
        ("note", "Notes"),
    ):
        notes = [n for n in report.notes if n["kind"] == kind]
        if not notes:
            continue
        out += ["", f"## {title}"]
        for note in notes:
            extra = ", ".join(
                f"{k}: {note[k]}" for k in ("category", "action", "priority", "effort") if note.get(k)
            )
            by = f" ({note['by']})" if note.get("by") else ""
            out.append(f"- {note['text']}" + (f" [{extra}]" if extra else "") + by)
    out += ["", "## Final Review"]
    final = report.final
    if final is None:
        out.append("- Not yet: the final review runs when every phase has completed.")
    else:
        out += [
            "",
            "### Deployment SLOs",
            *table(
                ["SLO", "Value", "Target", "Met", "Detail"],
                (
                    [s.name, s.value, s.target, {True: "yes", False: "NO", None: "unknown"}[s.met], s.detail]
                    for s in final.slos
                ),
            ),
        ]
    impact = report.impact or {}
    out += [
        "",
        "### Customer Impact",
        f"- Support tickets related to deployment: {cell(impact.get('tickets'))}",
        f"- Customer complaints: {cell(impact.get('complaints'))}",
        f"- Positive feedback: {cell(impact.get('positive'))}",
    ]
    if final is not None:
        out += [
            "",
            "### Sign-offs",
            *table(
                ["Role", "Signed", "Name", "Date", "Notes"],
                ([s.role, "yes" if s.signed else "no", s.by, s.at, s.notes] for s in final.signoffs),
            ),
        ]
    if report.cleanup:
        out += [
            "",
            "## Cleanup",
            *table(
                ["Kind", "Name", "Why", "Result"],
                ([o.get("kind"), o.get("name"), o.get("why"), o.get("result")] for o in report.cleanup),
            ),
        ]
    if report.postmortem:
        pm = report.postmortem
        out += [
            "",
            f"## Post-mortem ({pm['trigger']})",
            "",
            "To be completed by the team; schedule the meeting within 5 working days.",
            "",
            "### Timeline",
            *table(["When", "What"], pm["timeline"]),
            "",
            "### Impact",
            "- Users affected: ",
            "- Duration: ",
            "",
            "### Root Cause",
            "- ",
            "",
            "### What Went Wrong",
            *(f"- check {name} failed" for name in pm["failed"]),
            "",
            "### Follow-up Actions",
            "- ",
        ]
    return "\n".join(out) + "\n"
