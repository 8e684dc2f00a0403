"""The argument parser and entry point of ``kubectl postdeploy`` (``kubectl-postdeploy``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from postdeploy.plugin import backtesting, commands, errors
from postdeploy.plugin.kube import Session

__all__ = ["main", "parser"]

EPILOG = """exit codes: 0 ok, 1 API error, 2 usage, 3 not found, 4 forbidden,
5 conflict (already signed, phase over, not a manual check), 6 invalid"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(errors.USAGE, f"error: {message} (see kubectl postdeploy --help)\n")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="kubectl postdeploy",
        description="Work with post-deployment reviews.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("-n", "--namespace", help="the review's namespace (default: the context's)")
    top.add_argument("--kubeconfig", help="path to the kubeconfig file")
    top.add_argument("--context", help="the kubeconfig context to use")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_, description=help_)
        command.add_argument("-n", "--namespace", dest="sub_namespace", help=argparse.SUPPRESS)
        return command

    listing = add("list", "list reviews")
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    status = add("status", "a review's checks: state, value, baseline, threshold")
    status.add_argument("name")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    report = add("report", "the deployment report (Markdown, or a self-contained HTML page)")
    report.add_argument("name")
    report.add_argument("--format", choices=["md", "html"], default="md")
    report.add_argument("-f", "--output-file", help="write to this file instead of stdout")
    report.add_argument(
        "--live", action="store_true", help="render from the review's status, not the stored report"
    )
    confirm = add("confirm", "confirm (or reject) a manual check")
    confirm.add_argument("name")
    confirm.add_argument("check")
    confirm.add_argument("--note", default="")
    confirm.add_argument("--reject", action="store_true", help="record that the item is not OK")
    signoff = add("signoff", "sign off a review for a role, as the user the API server authenticates")
    signoff.add_argument("name")
    signoff.add_argument("--role", required=True)
    signoff.add_argument("--notes", default="")
    note = add("note", "record a lesson, runbook update, tech debt, improvement or error remediation")
    note.add_argument("name")
    note.add_argument("--lesson")
    note.add_argument("--runbook")
    note.add_argument("--tech-debt")
    note.add_argument("--improvement")
    note.add_argument("--remediation", metavar="ERROR_TYPE")
    note.add_argument("--text", help="a plain note")
    note.add_argument("--category", help="for a lesson: Process, Technical...")
    note.add_argument("--action", help="for a lesson: what to do about it")
    note.add_argument("--priority", choices=["high", "medium", "low"])
    note.add_argument("--effort")
    note.add_argument("--cause", help="for a remediation")
    note.add_argument("--fix", help="for a remediation")
    note.add_argument("--owner")
    impact = add("impact", "record customer impact")
    impact.add_argument("name")
    impact.add_argument("--tickets", type=_count)
    impact.add_argument("--complaints", type=_count)
    impact.add_argument("--positive", type=_count)
    rerun = add("rerun", "run a check of the current phase again, now")
    rerun.add_argument("name")
    rerun.add_argument("check")
    backtest = add("backtest", "how a review or template would have judged past releases (read-only)")
    backtesting.add_arguments(backtest)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    namespace = args.sub_namespace or args.namespace
    try:
        session = Session(args.kubeconfig, args.context, namespace)
        if args.command == "backtest":
            return backtesting.backtest(session, args, sys.stdout)
        return commands.COMMANDS[args.command](session, args, sys.stdout)
    except errors.PluginError as error:
        sys.stderr.write(f"error: {error}\n")
        return error.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
