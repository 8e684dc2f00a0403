"""One function per ``kubectl postdeploy`` subcommand.

Called by ``postdeploy.plugin.cli`` with the user's ``Session`` and parsed arguments;
each writes its result to ``out`` and returns 0, or raises ``PluginError``. What a
person writes goes into the review's annotations (``postdeploy.reports.inputs``),
except sign-offs, which are ``ReviewSignoff`` objects the admission webhook stamps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from postdeploy.kit import times
from postdeploy.models.reviews import CheckStatus, ReviewStatus
from postdeploy.plugin import errors
from postdeploy.plugin.kube import Session
from postdeploy.providers.manual import ANNOTATION_PREFIX as CONFIRM_PREFIX
from postdeploy.reports import documents, inputs, markdown, pages

__all__ = ["COMMANDS", "write_output"]


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO) -> None:
    cells = [[str(h) for h in headers]] + [["-" if v is None or v == "" else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    then = times.parse(timestamp)
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _check(status: ReviewStatus, review: str, name: str) -> CheckStatus:
    found = next((c for c in status.checks if c.name == name), None)
    if found is None:
        known = ", ".join(c.name for c in status.checks) or "none yet"
        raise errors.PluginError(f"review {review} has no check {name!r} (checks: {known})", errors.NOT_FOUND)
    return found


def list_reviews(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    items = session.reviews(args.all_namespaces)
    rows = []
    for item in sorted(items, key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"])):
        status = item.get("status") or {}
        row = [
            item["metadata"]["name"],
            status.get("target"),
            status.get("version"),
            status.get("phase"),
            status.get("verdict"),
            _age(item["metadata"].get("creationTimestamp")),
        ]
        rows.append(([item["metadata"].get("namespace")] if args.all_namespaces else []) + row)
    if not rows:
        out.write(
            "No reviews found.\n" if not args.all_namespaces else "No reviews found in any namespace.\n"
        )
        return errors.OK
    headers = ["NAME", "TARGET", "VERSION", "PHASE", "VERDICT", "AGE"]
    _table((["NAMESPACE"] if args.all_namespaces else []) + headers, rows, out)
    return errors.OK


def status(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    body = session.review(args.name)
    if args.output == "json":
        out.write(json.dumps(body.get("status") or {}, indent=2) + "\n")
        return errors.OK
    parsed = ReviewStatus.model_validate(body.get("status") or {})
    out.write(
        f"Review:   {session.namespace}/{args.name}\nTarget:   {parsed.target or '-'}\n"
        f"Version:  {parsed.version or '-'}\nDeployed: {parsed.deployed_at or '-'}\n"
        f"Phase:    {parsed.phase or '-'}\nVerdict:  {parsed.verdict or '-'}\n"
        f"Message:  {parsed.message or '-'}\n\n"
    )
    _table(
        ["CHECK", "PHASE", "STATE", "VALUE", "BASELINE", "THRESHOLD", "RUNS", "MESSAGE"],
        [
            [
                c.name,
                c.phase,
                c.state.value,
                documents.fmt(c.value),
                documents.fmt(c.baseline),
                documents.threshold(c),
                c.runs,
                c.message[:80],
            ]
            for c in parsed.checks
        ],
        out,
    )
    final = (body.get("status") or {}).get("finalReview")
    if final:
        out.write("\nFinal review: verdict " + str(final.get("verdict")) + "\n")
        _table(
            ["SLO", "VALUE", "TARGET", "MET"],
            [[s.get("name"), s.get("value"), s.get("target"), s.get("met")] for s in final.get("slos", [])],
            out,
        )
        out.write("\n")
        _table(
            ["ROLE", "SIGNED", "BY", "AT"],
            [[s.get("role"), s.get("signed"), s.get("by"), s.get("at")] for s in final.get("signoffs", [])],
            out,
        )
        items = final.get("actionItems") or []
        if items:
            out.write("\n")
            _table(
                ["PRIORITY", "ACTION ITEM", "SOURCE", "OWNER"],
                [
                    [i.get("priority"), str(i.get("action", ""))[:100], i.get("source"), i.get("owner")]
                    for i in items
                ],
                out,
            )
    return errors.OK


def report(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    key = "report.html" if args.format == "html" else "report.md"
    stored = None if args.live else session.report_configmap(args.name)
    if stored and key in stored:
        text = stored[key]
    else:
        body = session.review(args.name)
        if not body.get("status"):
            raise errors.PluginError(
                f"review {args.name} has no status yet: nothing to report", errors.NOT_FOUND
            )
        parsed = ReviewStatus.model_validate(body["status"])
        built = documents.build(body, documents.history_charts(parsed.checks))
        text = pages.render(built) if args.format == "html" else markdown.render(built)
    return write_output(text, args.output_file, out)


def write_output(text: str, output_file: str | None, out: TextIO) -> int:
    """A command's document to ``output_file`` (saying so on ``out``), else to ``out``."""
    if output_file:
        with open(output_file, "w", encoding="utf-8") as handle:
            handle.write(text)
        out.write(f"wrote {output_file}\n")
    else:
        out.write(text)
    return errors.OK


def confirm(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    body = session.review(args.name)
    check = _check(ReviewStatus.model_validate(body.get("status") or {}), args.name, args.check)
    if check.provider != "manual":
        raise errors.PluginError(
            f"check {args.check} is a {check.provider} check; only manual checks are confirmed",
            errors.CONFLICT,
        )
    result = "rejected" if args.reject else "confirmed"
    value = {"result": result, "note": args.note or "", "by": session.whoami(), "at": session.now()}
    session.annotate(
        args.name,
        {CONFIRM_PREFIX + args.check: json.dumps(value), inputs.RERUN_PREFIX + args.check: _token()},
    )
    out.write(f"{args.check} {result} by {value['by']}\n")
    return errors.OK


def signoff(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    created = session.create_signoff(args.name, args.role, args.notes or "")
    spec = created.get("spec") or {}
    signer = (spec.get("signedBy") or {}).get("username")
    if not signer:
        out.write(
            f"{args.role} sign-off of {args.name} recorded, but no webhook stamped the signer: "
            "the operator will not count it (is the sign-off webhook enabled?)\n"
        )
        return errors.CONFLICT
    out.write(f"{args.name}: signed off as {args.role} by {signer} at {spec.get('signedAt')}\n")
    return errors.OK


def _token() -> str:
    return f"{datetime.datetime.now(datetime.UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


def _completed(body: Mapping[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


def _late(name: str, body: Mapping[str, Any], out: TextIO) -> None:
    """Say so when what a person enters comes after the final review was written."""
    if _completed(body):
        out.write(
            f"note: {name} is Complete; its final review and stored report were written before this "
            "and do not change (the entry stays on the review's annotations)\n"
        )


def note(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    kinds = {
        "lesson": args.lesson,
        "runbook": args.runbook,
        "tech-debt": args.tech_debt,
        "improvement": args.improvement,
        "remediation": args.remediation,
        "note": args.text,
    }
    chosen = [(k, v) for k, v in kinds.items() if v]
    if len(chosen) != 1:
        raise errors.PluginError(
            "give exactly one of --lesson, --runbook, --tech-debt, --improvement, --remediation TYPE, --text",
            errors.USAGE,
        )
    kind, text = chosen[0]
    body = session.review(args.name)  # a clear "not found" before writing
    value: dict[str, Any] = {"kind": kind, "text": text, "by": session.whoami(), "at": session.now()}
    if kind == "remediation":
        value.update(type=text, text=args.fix or args.cause or text)
    for field in ("category", "action", "priority", "effort", "cause", "fix", "owner"):
        if getattr(args, field, None):
            value[field] = getattr(args, field)
    key = f"{inputs.NOTE_PREFIX}{kind}-{_token().lower()}"
    session.annotate(args.name, {key: json.dumps(value)})
    out.write(f"{kind} recorded on {args.name}\n")
    _late(args.name, body, out)
    return errors.OK


def impact(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    if args.tickets is None and args.complaints is None and args.positive is None:
        raise errors.PluginError("give at least one of --tickets, --complaints, --positive", errors.USAGE)
    body = session.review(args.name)
    current = inputs.impact(dict(body["metadata"].get("annotations") or {})) or {}
    value = {
        "tickets": args.tickets if args.tickets is not None else current.get("tickets"),
        "complaints": args.complaints if args.complaints is not None else current.get("complaints"),
        "positive": args.positive if args.positive is not None else current.get("positive"),
        "by": session.whoami(),
        "at": session.now(),
    }
    session.annotate(args.name, {inputs.IMPACT_ANNOTATION: json.dumps(value)})
    out.write(
        f"customer impact of {args.name}: {value['tickets']} ticket(s), {value['complaints']} complaint(s), "
        f"{value['positive']} positive\n"
    )
    _late(args.name, body, out)
    return errors.OK


def rerun(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    body = session.review(args.name)
    parsed = ReviewStatus.model_validate(body.get("status") or {})
    check = _check(parsed, args.name, args.check)
    completed = {p.name for p in parsed.phases if p.state == "Completed"}
    if check.phase in completed:
        raise errors.PluginError(
            f"check {args.check} belongs to phase {check.phase}, which has completed; only checks of the "
            "current phase can be rerun",
            errors.CONFLICT,
        )
    token = _token()
    session.annotate(args.name, {inputs.RERUN_PREFIX + args.check: token})
    note_ = " (a Failed check stays Failed)" if check.state.value == "Failed" else ""
    out.write(f"rerun of {args.check} requested ({token}){note_}\n")
    return errors.OK


COMMANDS = {
    "list": list_reviews,
    "status": status,
    "report": report,
    "confirm": confirm,
    "signoff": signoff,
    "note": note,
    "impact": impact,
    "rerun": rerun,
}
