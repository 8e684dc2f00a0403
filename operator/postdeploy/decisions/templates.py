"""Template merging and spec resolution: from what was applied to what will run.

Called by ``postdeploy.engine`` on every tick (cheap: pure dict work). A review's
phases override the template's phases of the same name; inside a phase, a review's
check overrides the template's check of the same name field by field. A review check
that names the template check's provider overrides fields of that block (only
``step``, say), and fields of a block inside it (``compare: {minEffect: 0.5}``); one
that names another provider replaces the block. A baseline is
merged key by key, and choosing ``offset`` or ``preDeploy`` drops the other.
Phases and checks the template lacks are appended; the template's ``parameters``
are defaults under the review's. The result is validated into
``ResolvedReview``; anything wrong raises ``InvalidSpec`` whose message names the
field, e.g. ``spec.phases[immediate].checks[error-rate].failWhen: ...``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from postdeploy.decisions import conditions, defaults
from postdeploy.kit import durations, exceptions
from postdeploy.models import checks as check_models
from postdeploy.models import reviews

__all__ = [
    "DEFAULT_INTERVAL",
    "MIN_INTERVAL",
    "ResolvedCheck",
    "ResolvedPhase",
    "ResolvedReview",
    "Resolver",
    "merge",
    "resolve",
]

DEFAULT_INTERVAL = datetime.timedelta(minutes=1)
# Shorter intervals would keep a review ticking (and writing its status) without pause.
MIN_INTERVAL = datetime.timedelta(seconds=1)


@dataclasses.dataclass(frozen=True)
class ResolvedCheck:
    spec: check_models.Check
    phase: str
    interval: datetime.timedelta
    fail_when: conditions.Expression | None
    pass_when: conditions.Expression | None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclasses.dataclass(frozen=True)
class ResolvedPhase:
    name: str
    start: datetime.timedelta
    end: datetime.timedelta
    checks: tuple[ResolvedCheck, ...]


@dataclasses.dataclass(frozen=True)
class ResolvedReview:
    spec: reviews.PostDeploymentReviewSpec
    phases: tuple[ResolvedPhase, ...]

    def check(self, name: str) -> ResolvedCheck | None:
        for phase in self.phases:
            for check in phase.checks:
                if check.name == name:
                    return check
        return None


def _merge_check(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    named = [f for f in check_models.PROVIDER_FIELDS if f in override]
    if named and not (len(named) == 1 and named[0] in base):
        for field in check_models.PROVIDER_FIELDS:
            merged.pop(field, None)
    for key, value in override.items():
        if (
            key in check_models.PROVIDER_FIELDS
            and isinstance(value, Mapping)
            and isinstance(merged.get(key), Mapping)
        ):
            merged[key] = {
                field: {**merged[key][field], **inner}
                if isinstance(inner, Mapping) and isinstance(merged[key].get(field), Mapping)
                else inner
                for field, inner in {**merged[key], **value}.items()
            }
        elif key == "baseline" and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            base_baseline = dict(merged[key])
            # offset and preDeploy are alternatives: choosing one drops the template's other.
            if value.get("preDeploy"):
                base_baseline.pop("offset", None)
            if value.get("offset"):
                base_baseline.pop("preDeploy", None)
            merged[key] = {**base_baseline, **value}
        else:
            merged[key] = value
    return merged


def _merge_named(
    base: Sequence[Mapping[str, Any]],
    override: Sequence[Mapping[str, Any]],
    merge_one: Any,
) -> list[dict[str, Any]]:
    result = [dict(item) for item in base]
    index = {item.get("name"): i for i, item in enumerate(result)}
    for item in override:
        name = item.get("name")
        if name in index:
            result[index[name]] = merge_one(result[index[name]], item)
        else:
            index[name] = len(result)
            result.append(dict(item))
    return result


def _merge_phase(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**base, **{k: v for k, v in override.items() if k != "checks"}}
    merged["checks"] = _merge_named(base.get("checks", []), override.get("checks", []), _merge_check)
    return merged


def merge(template: Mapping[str, Any] | None, review: Mapping[str, Any]) -> dict[str, Any]:
    """The review's spec (wire form) with the template's phases merged under it."""
    merged = dict(review)
    template = template or {}
    merged["phases"] = _merge_named(template.get("phases", []), review.get("phases", []), _merge_phase)
    if "interval" not in merged and "interval" in template:
        merged["interval"] = template["interval"]
    if template.get("parameters"):
        merged["parameters"] = {**template["parameters"], **review.get("parameters", {})}
    return merged


def _field(path: Sequence[Any]) -> str:
    out = "spec"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _pydantic_message(error: pydantic.ValidationError, raw: Mapping[str, Any]) -> str:
    first = error.errors()[0]
    path = list(first["loc"])
    # Name phases and checks by their names rather than their positions.
    readable: list[Any] = []
    node: Any = raw
    for part in path:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            item = node[part]
            name = item.get("name") if isinstance(item, Mapping) else None
            if readable and name:
                readable[-1] = f"{readable[-1]}[{name}]"
            else:
                readable.append(part)
            node = item
            continue
        readable.append(part)
        node = node.get(part) if isinstance(node, Mapping) else None
    message = first["msg"].removeprefix("Value error, ")
    return f"{_field(readable)}: {message}"


def _parse_condition(text: str | None, where: str) -> conditions.Expression | None:
    if text is None:
        return None
    try:
        return conditions.parse(text)
    except exceptions.ConditionError as error:
        raise exceptions.InvalidSpec(f"{where}: {error}") from None


def resolve(merged: Mapping[str, Any]) -> ResolvedReview:
    """Validate a merged spec into what the engine runs; raise InvalidSpec."""
    try:
        spec = reviews.PostDeploymentReviewSpec.model_validate(merged)
    except pydantic.ValidationError as error:
        raise exceptions.InvalidSpec(_pydantic_message(error, merged)) from None
    if not spec.phases:
        raise exceptions.InvalidSpec("spec.phases: the review has no phases (no template and none given)")
    default_interval = durations.parse_duration(spec.interval) if spec.interval else DEFAULT_INTERVAL
    seen: dict[str, str] = {}
    phases: list[ResolvedPhase] = []
    previous_start: datetime.timedelta | None = None
    for phase in spec.phases:
        where = f"spec.phases[{phase.name}]"
        if phase.start is None or phase.end is None:
            missing = "start" if phase.start is None else "end"
            raise exceptions.InvalidSpec(
                f"{where}.{missing}: required (no template phase of that name has it)"
            )
        start, end = durations.parse_duration(phase.start), durations.parse_duration(phase.end)
        if end <= start:
            raise exceptions.InvalidSpec(f"{where}: end ({phase.end}) must be after start ({phase.start})")
        if previous_start is not None and start < previous_start:
            raise exceptions.InvalidSpec(f"{where}.start: phases must be listed in order of their start")
        previous_start = start
        interval = durations.parse_duration(phase.interval) if phase.interval else default_interval
        resolved_checks: list[ResolvedCheck] = []
        for check in phase.checks:
            check_where = f"{where}.checks[{check.name}]"
            if check.name in seen:
                raise exceptions.InvalidSpec(
                    f"{check_where}: check names must be unique in a review "
                    f"(also in phase {seen[check.name]})"
                )
            seen[check.name] = phase.name
            if not check.enabled:
                continue
            try:
                check.resolved()
            except ValueError as error:
                raise exceptions.InvalidSpec(f"{check_where}: {error}") from None
            check_interval = durations.parse_duration(check.interval) if check.interval else interval
            fail_when, pass_when = defaults.default_conditions(check)
            check = check.model_copy(update={"fail_when": fail_when, "pass_when": pass_when})
            if check_interval < MIN_INTERVAL:
                raise exceptions.InvalidSpec(
                    f"{check_where}.interval: {format_interval(check_interval)} is shorter than the "
                    "minimum, 1s (set on the check, its phase, the review or the template)"
                )
            resolved_checks.append(
                ResolvedCheck(
                    spec=check,
                    phase=phase.name,
                    interval=check_interval,
                    fail_when=_parse_condition(check.fail_when, f"{check_where}.failWhen"),
                    pass_when=_parse_condition(check.pass_when, f"{check_where}.passWhen"),
                )
            )
        phases.append(ResolvedPhase(phase.name, start, end, tuple(resolved_checks)))
    return ResolvedReview(spec, tuple(phases))


_TEMPLATES_HELD = 16


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


def _put_bounded(held: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """``held[key] = value``, dropping the oldest entry first when ``limit`` are held."""
    if len(held) >= limit:
        held.pop(next(iter(held)))
    held[key] = value


class Resolver:
    """``resolve(merge(template, spec))``, with the phases shared by reviews of one template.

    Reviews of one template differ in their target, version and times, and mostly not in
    their phases, whose validation (pydantic, 27 checks for the built-in template) was a
    tenth of the operator's CPU at 2,000 reviews and whose result is most of a resolved
    review's memory (about 126 kB for the built-in template). So the phases are resolved
    once per distinct (template, the review's ``phases`` and ``interval``), and every
    review with that key gets the same ``ResolvedPhase`` objects and ``Phase`` models
    (never changed after resolution); only the rest of the spec (target, version,
    ``deployedAt``, actions; tens of microseconds) is validated per call and not kept.

    A template's digest is computed once per template object (``ClusterInputs`` keeps
    one for 30 s) rather than from its 19 kB of JSON on every call. InvalidSpec is
    raised as by ``resolve`` and nothing is remembered for it.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._templates: dict[int, tuple[Mapping[str, Any] | None, bytes]] = {}
        self._phases: dict[bytes, tuple[list[reviews.Phase], tuple[ResolvedPhase, ...]]] = {}

    def _template_digest(self, template: Mapping[str, Any] | None) -> bytes:
        held = self._templates.get(id(template))
        if held is not None and held[0] is template:
            return held[1]
        digest = _digest(template)
        # Few templates are in use at once, and ClusterInputs hands out a new object for
        # each every 30 s: keep only the latest few, not hundreds of stale copies. The
        # template is held beside its digest so that its id cannot be reused meanwhile.
        _put_bounded(self._templates, id(template), (template, digest), _TEMPLATES_HELD)
        return digest

    def resolve(self, template: Mapping[str, Any] | None, spec: Mapping[str, Any]) -> ResolvedReview:
        """The review ``spec`` (wire form) merged with ``template`` and resolved."""
        key = _digest(self._template_digest(template), spec.get("phases"), spec.get("interval"))
        shared = self._phases.get(key)
        if shared is None:
            review = resolve(merge(template, spec))
            _put_bounded(self._phases, key, (review.spec.phases, review.phases), self.limit)
            return review
        models, phases = shared
        # The phases are shared: merge only the rest (interval, parameters), not 27 checks.
        merged = merge({**template, "phases": []} if template else None, {**spec, "phases": []})
        try:
            top = reviews.PostDeploymentReviewSpec.model_validate({**merged, "phases": []})
        except pydantic.ValidationError as error:
            raise exceptions.InvalidSpec(_pydantic_message(error, merged)) from None
        return ResolvedReview(top.model_copy(update={"phases": models}), phases)


def format_interval(interval: datetime.timedelta) -> str:
    """An interval for a message: ``250ms``, or ``durations.format_duration``'s form."""
    if interval < datetime.timedelta(seconds=1):
        return f"{interval.total_seconds() * 1000:g}ms"
    return durations.format_duration(interval)
