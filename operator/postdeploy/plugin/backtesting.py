"""``kubectl postdeploy backtest``: how a review or template would have judged past releases.

Called by ``postdeploy.plugin.cli``. It reads (GET/LIST only, with the user's
kubeconfig) the review or template to replay, and the target's ReplicaSets or
ControllerRevisions when asked for ``--from-history``; merges and resolves the spec
with ``decisions.templates`` as the operator does; finds the releases
(``backtests.releases``); replays them (``backtests.replays``) against Prometheus
(``--prometheus-url``, else the review's ``spec.providers.prometheusUrl``, else
``POSTDEPLOY_PROMETHEUS_URL``) and PostgreSQL (``POSTDEPLOY_POSTGRES_DSN``; a DSN is
never taken on the command line, where ``ps`` shows it); and writes a table, JSON
or an HTML page. It creates, patches and deletes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import os
from collections.abc import Mapping
from typing import Any, TextIO

import yaml

from postdeploy import defaults
from postdeploy.backtests import releases, replays, summaries
from postdeploy.decisions import templates
from postdeploy.kit import durations, exceptions, times
from postdeploy.models.measurements import Target
from postdeploy.plugin import backtest_pages as backtest_pages
from postdeploy.plugin import commands, errors
from postdeploy.plugin.kube import Session
from postdeploy.providers.prometheus_api import PrometheusApi

__all__ = ["add_arguments", "backtest"]


def add_arguments(command: argparse.ArgumentParser) -> None:
    what = command.add_mutually_exclusive_group()
    what.add_argument("--review", metavar="NAME", help="replay this review's spec (merged with its template)")
    what.add_argument("--template", metavar="NAME", help="replay this template (default: postdeploy-default)")
    what.add_argument(
        "-f",
        "--filename",
        metavar="FILE",
        help="a PostDeploymentReview, ReviewTemplate or ClusterReviewTemplate in YAML",
    )
    command.add_argument(
        "--template-kind",
        choices=["ClusterReviewTemplate", "ReviewTemplate"],
        default="ClusterReviewTemplate",
    )
    command.add_argument("--target", metavar="KIND/NAME", help="the workload, e.g. Deployment/checkout")
    command.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a template parameter over the spec's (repeatable)",
    )
    when = command.add_argument_group("releases (one of)")
    when.add_argument(
        "--at", action="append", default=[], metavar="TIME", help="a release time (RFC 3339; repeatable)"
    )
    when.add_argument("--every", metavar="DURATION", help="releases every DURATION back from --until")
    when.add_argument(
        "--since", metavar="DURATION", default="7d", help="with --every or --from-promql: how far back"
    )
    when.add_argument(
        "--from-history", action="store_true", help="the target's ReplicaSets / ControllerRevisions"
    )
    when.add_argument(
        "--from-promql", metavar="EXPR", help="a PromQL expression whose answer changes at each release"
    )
    when.add_argument("--promql-step", default="1m", metavar="DURATION", help="resolution of --from-promql")
    command.add_argument("--until", metavar="TIME", help="replay up to this time (default: now)")
    command.add_argument(
        "--prometheus-url", help="Prometheus to ask (default: the spec's, else $POSTDEPLOY_PROMETHEUS_URL)"
    )
    command.add_argument(
        "--no-batch", action="store_true", help="send every query as the operator would (slower)"
    )
    command.add_argument("-o", "--output", choices=["table", "json", "html"], default="table")
    command.add_argument("--output-file", metavar="FILE", help="write to this file instead of stdout")


def _load_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        raise errors.PluginError(f"cannot read {path}: {error}", errors.USAGE) from None
    if not isinstance(document, dict) or "spec" not in document:
        raise errors.PluginError(f"{path}: not a review or template (no spec)", errors.INVALID)
    return document


def _template_spec(session: Session, kind: str, name: str) -> tuple[dict[str, Any], str]:
    found = session.template(kind, name)
    if found is not None:
        return dict(found.get("spec") or {}), f"{kind} {name}"
    if kind == "ClusterReviewTemplate" and name == defaults.NAME:
        return dict(defaults.manifest()["spec"]), f"{defaults.NAME} (built in; not installed in the cluster)"
    raise errors.PluginError(f"{kind} {name!r} not found", errors.NOT_FOUND)


def _spec(session: Session, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The merged spec to replay (wire form) and a name for it."""
    review: dict[str, Any] = {}
    template: dict[str, Any] | None = None
    name = ""
    if args.review or (args.filename and _load_file(args.filename).get("kind") == "PostDeploymentReview"):
        body = session.review(args.review) if args.review else _load_file(args.filename)
        review = dict(body.get("spec") or {})
        name = f"review {body.get('metadata', {}).get('name', args.filename)}"
        ref = review.get("templateRef")
        if ref:
            template, template_name = _template_spec(
                session, ref.get("kind", "ClusterReviewTemplate"), ref["name"]
            )
        elif review.get("useDefaultTemplate", True):
            template, template_name = _template_spec(session, "ClusterReviewTemplate", defaults.NAME)
        else:
            template_name = "no template"
        name = f"{name} with {template_name}"
    elif args.filename:
        document = _load_file(args.filename)
        template = dict(document["spec"])
        name = f"{document.get('kind', 'template')} {document.get('metadata', {}).get('name', args.filename)}"
    else:
        template, name = _template_spec(session, args.template_kind, args.template or defaults.NAME)
    if args.target:
        kind, _, target_name = args.target.partition("/")
        if not target_name:
            raise errors.PluginError("--target takes KIND/NAME, e.g. Deployment/checkout", errors.USAGE)
        review["target"] = {"kind": kind, "name": target_name, "namespace": session.namespace}
    if not review.get("target"):
        raise errors.PluginError("no target: give --target KIND/NAME (or --review)", errors.USAGE)
    review["target"] = {"namespace": session.namespace, **review["target"]}
    for item in args.parameter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.PluginError(f"--parameter takes KEY=VALUE, not {item!r}", errors.USAGE)
        review["parameters"] = {**(review.get("parameters") or {}), key: value}
    return templates.merge(template, review), name


def _time(text: str | None, default: datetime.datetime) -> datetime.datetime:
    if not text:
        return default
    try:
        return times.parse(text)
    except ValueError:
        raise errors.PluginError(f"not a time (RFC 3339): {text!r}", errors.USAGE) from None


def _duration(text: str, flag: str) -> datetime.timedelta:
    try:
        return durations.parse_duration(text)
    except ValueError as error:
        raise errors.PluginError(f"{flag}: {error}", errors.USAGE) from None


async def _from_promql(
    url: str, expression: str, since: datetime.datetime, until: datetime.datetime, step: datetime.timedelta
) -> list[replays.Release]:
    api = PrometheusApi(timeout_seconds=60)
    seconds = max(1, round(step.total_seconds()))
    start, end = round(since.timestamp()) // seconds * seconds, round(until.timestamp())
    found: list[replays.Release] = []
    try:
        # Chunks within Prometheus's 11,000 points per query.
        chunk = seconds * 10_000
        for first in range(start, end + 1, chunk):
            last = min(end, first + chunk - seconds)
            matrix = await api.query_range(url, expression, first - seconds, last, seconds)
            if not isinstance(matrix, list):
                raise errors.PluginError("--from-promql: the expression returned no matrix", errors.INVALID)
            found += releases.from_matrix(matrix, first - seconds, last, seconds)
    except exceptions.QueryFailed as error:
        raise errors.PluginError(f"--from-promql: {error}", errors.API) from None
    finally:
        await api.close()
    return found


def _releases(
    session: Session, args: argparse.Namespace, target: Target, url: str | None, until: datetime.datetime
) -> list[replays.Release]:
    chosen = [bool(args.at), bool(args.every), args.from_history, bool(args.from_promql)]
    if sum(chosen) != 1:
        raise errors.PluginError(
            "name the releases with one of --at, --every, --from-history, --from-promql", errors.USAGE
        )
    since = until - _duration(args.since, "--since")
    if args.at:
        return sorted((replays.Release(_time(t, until), source="given") for t in args.at), key=lambda r: r.at)
    if args.every:
        return releases.every(_duration(args.every, "--every"), since, until)
    if args.from_history:
        workload = session.workload(target.kind, target.namespace, target.name)
        found = releases.from_workload_history(workload, session.workload_revisions(workload, target.kind))
        return [r for r in found if since <= r.at <= until]
    if not url:
        raise errors.PluginError("--from-promql needs a Prometheus URL (--prometheus-url)", errors.USAGE)
    step = _duration(args.promql_step, "--promql-step")
    return asyncio.run(_from_promql(url, args.from_promql, since, until, step))


def _prometheus_url(args: argparse.Namespace, merged: Mapping[str, Any]) -> str | None:
    spec_url = (merged.get("providers") or {}).get("prometheusUrl")
    url = args.prometheus_url or spec_url or os.environ.get("POSTDEPLOY_PROMETHEUS_URL")
    return str(url) if url else None


async def _replay(
    review: templates.ResolvedReview,
    target: Target,
    found: list[replays.Release],
    url: str | None,
    until: datetime.datetime,
    name: str,
    batch: bool,
) -> replays.Backtest:
    replayer = replays.Replayer(
        review,
        target,
        prometheus_url=url,
        postgres_dsn=os.environ.get("POSTDEPLOY_POSTGRES_DSN"),
        until=until,
        batch=batch,
        template=name,
    )
    try:
        return await replayer.run(found)
    finally:
        await replayer.close()


def backtest(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    merged, name = _spec(session, args)
    try:
        review = templates.resolve(merged)
    except exceptions.InvalidSpec as problem:
        raise errors.PluginError(str(problem), errors.INVALID) from None
    spec_target = review.spec.target
    target = Target(spec_target.kind, spec_target.name, spec_target.namespace or session.namespace)
    until = _time(args.until, datetime.datetime.now(datetime.UTC))
    url = _prometheus_url(args, merged)
    found = _releases(session, args, target, url, until)
    if not found:
        raise errors.PluginError("no releases to replay in that window", errors.NOT_FOUND)
    result = asyncio.run(_replay(review, target, found, url, until, name, not args.no_batch))
    if args.output == "json":
        text = json.dumps(summaries.as_dict(result), indent=2) + "\n"
    elif args.output == "html":
        text = backtest_pages.page(result)
    else:
        buffer = io.StringIO()
        summaries.write_table(result, buffer)
        text = buffer.getvalue()
    return commands.write_output(text, args.output_file, out)
