"""``postdeploy run``'s flags reach the engine as one explicit Settings, not the environment.

Covers: ``--namespace``, ``--selector``, ``--allow-cross-namespace`` and
``--egress-allow`` become fields of the Settings handed to the handlers in kopf's memo;
the environment is left as it was; a bad selector is a usage error; the watch's shard,
the webhooks' scope and the review webhook's confinement come from that Settings.
"""

from __future__ import annotations

import asyncio
import os
import types
from typing import Any

import kopf
import pytest

from postdeploy import __main__ as cli
from postdeploy.admission import servers
from postdeploy.decisions import selectors
from postdeploy.engine import settings
from postdeploy.handlers import lifecycle, reviews


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def operator(**kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(kopf, "operator", operator)
    # What it does to this process's sys.modules is tested in test_lazy_imports.py.
    monkeypatch.setattr(cli, "without_generated_clients", lambda: None)
    monkeypatch.setattr("postdeploy.kit.logs.configure", lambda fmt, level: None)
    monkeypatch.delenv("POSTDEPLOY_SELECTOR", raising=False)
    monkeypatch.delenv("POSTDEPLOY_NAMESPACES", raising=False)
    return seen


def test_the_flags_become_the_settings_in_kopfs_memo(
    started: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept_out: list[bool] = []
    monkeypatch.setattr(cli, "without_generated_clients", lambda: kept_out.append(True))
    before = dict(os.environ)
    argv = ["run", "-n", "team-a", "-n", "team-b", "--selector", "shard=a,tier!=batch"]
    argv += ["--allow-cross-namespace", "team-a=shared", "--egress-allow", "https://hooks.example/"]
    assert cli.main(argv) == 0
    given: settings.Settings = started["memo"].settings
    assert given.namespaces == ("team-a", "team-b")
    assert given.selector == "shard=a,tier!=batch"
    assert given.cross_namespace == frozenset({("team-a", "shared")})
    assert [str(p) for p in given.egress_allowlist] == ["https://hooks.example/"]
    assert started["namespaces"] == ["team-a", "team-b"]
    assert kept_out == [True], "the generated kubernetes clients are kept out before kopf is imported"
    assert dict(os.environ) == before, "nothing is passed through the environment"


@pytest.mark.parametrize(("setting", "loop_module"), [(None, "uvloop"), ("asyncio", "asyncio")])
def test_the_operator_runs_on_uvloop_unless_told_otherwise(
    started: dict[str, Any], monkeypatch: pytest.MonkeyPatch, setting: str | None, loop_module: str
) -> None:
    loops: list[str] = []

    async def operator(**kwargs: Any) -> None:
        loops.append(type(asyncio.get_running_loop()).__module__.split(".")[0])

    monkeypatch.setattr(kopf, "operator", operator)
    if setting is None:
        monkeypatch.delenv("POSTDEPLOY_EVENT_LOOP", raising=False)
    else:
        monkeypatch.setenv("POSTDEPLOY_EVENT_LOOP", setting)
    assert cli.main(["run"]) == 0
    assert loops == [loop_module]


def test_the_selector_defaults_to_the_environment_variable(
    started: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTDEPLOY_SELECTOR", "shard=b")
    assert cli.main(["run"]) == 0
    assert started["memo"].settings.selector == "shard=b"
    assert started["memo"].settings.namespaces == ()


def test_a_bad_selector_is_a_usage_error(started: dict[str, Any]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--selector", "shard in ("])
    assert exited.value.code == 2
    assert not started


def test_the_handlers_read_the_settings_from_the_memo() -> None:
    given = settings.Settings().watching(["team-a"], "shard=a").confined({("team-a", "shared")}, ())
    memo = kopf.Memo(settings=given)
    assert lifecycle.configured(memo) is given
    scoped = servers.WebhookSettings().scoped(given.namespaces, given.selector)
    assert (scoped.namespaces, scoped.selector) == (("team-a",), "shard=a")
    assert lifecycle.configured(kopf.Memo()) == settings.Settings.from_env()


async def test_the_watch_forgets_reviews_outside_its_shard() -> None:
    calls: list[tuple[str, str]] = []
    scheduler = types.SimpleNamespace(
        observe=lambda body: calls.append(("observe", body.metadata.name)),
        forget=lambda namespace, name: calls.append(("forget", name)),
    )
    memo = kopf.Memo(scheduler=scheduler, shard=selectors.parse("shard=a"))
    for name, labels in (("mine", {"shard": "a"}), ("theirs", {"shard": "b"})):
        body = kopf.Body({"metadata": {"name": name, "namespace": "team-a", "labels": labels}})
        await reviews.review_event(body=body, type="MODIFIED", memo=memo)
    assert calls == [("observe", "mine"), ("forget", "theirs")]


def test_the_zero_touch_age_limit_is_a_setting_read_from_the_environment() -> None:
    assert settings.Settings.from_env({}).zerotouch_max_age_seconds == 3600
    given = settings.Settings.from_env({"POSTDEPLOY_ZEROTOUCH_MAX_AGE": "90m"})
    assert given.zerotouch_max_age_seconds == 5400


def test_the_api_clients_connections_are_a_setting_read_from_the_environment() -> None:
    assert settings.Settings.from_env({}).api_connections == 16
    assert settings.Settings.from_env({"POSTDEPLOY_API_CONNECTIONS": "40"}).api_connections == 40
    assert settings.Settings.from_env({"POSTDEPLOY_API_CONNECTIONS": "0"}).api_connections == 1



def test_the_mirrors_bound_is_a_setting_read_from_the_environment() -> None:
    assert settings.Settings.from_env({}).mirror_objects == 5000
    assert settings.Settings.from_env({"POSTDEPLOY_MIRROR_OBJECTS": "0"}).mirror_objects == 0
    assert settings.Settings.from_env({"POSTDEPLOY_MIRROR_OBJECTS": "-3"}).mirror_objects == 0


def test_the_collector_thresholds_come_from_the_environment_or_the_default() -> None:
    assert cli.gc_threshold({}) == cli.GC_THRESHOLD
    assert cli.gc_threshold({"POSTDEPLOY_GC_THRESHOLD": "200000"}) == (200_000, *cli.GC_THRESHOLD[1:])
    assert cli.gc_threshold({"POSTDEPLOY_GC_THRESHOLD": " 100000, 20,5 "}) == (100_000, 20, 5)
    for bad in ("0", "-5", "1,2", "a,b,c", "1.5", "1,2,3,4"):
        with pytest.raises(ValueError, match="POSTDEPLOY_GC_THRESHOLD"):
            cli.gc_threshold({"POSTDEPLOY_GC_THRESHOLD": bad})


def test_a_bad_collector_threshold_is_a_usage_error(
    started: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POSTDEPLOY_GC_THRESHOLD", "many")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run"])
    assert exit_.value.code == 2
    assert "POSTDEPLOY_GC_THRESHOLD" in capsys.readouterr().err
