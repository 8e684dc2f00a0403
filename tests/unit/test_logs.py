"""The operator's log formats (``postdeploy.kit.logs``).

Covers: ``redact`` masks URL and DSN passwords, key=value secrets, bearer tokens and
registered values, and leaves ordinary text alone; a JSON line carries time, level,
logger, message, the review from kopf's per-object logger or from ``extra``, the
check from ``extra``, and a redacted traceback; the text format is redacted too;
``configure`` leaves exactly one handler on the root logger.
"""

from __future__ import annotations

import json
import logging
import sys

import pytest

from postdeploy.kit import logs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "dial postgresql://app:hunter22@db:5432/shop: refused",
            "dial postgresql://app:***@db:5432/shop: refused",
        ),
        ("host=db user=app password=hunter22 dbname=x", "host=db user=app password=*** dbname=x"),
        ("POST https://hooks.example/x?token=abc123&y=1", "POST https://hooks.example/x?token=***&y=1"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9", "Authorization: Bearer ***"),
        ("GET https://example.com/health -> 503", "GET https://example.com/health -> 503"),
        ("error-rate 0.02 > 0.01 (failWhen)", "error-rate 0.02 > 0.01 (failWhen)"),
    ],
)
def test_redact_masks_credentials_and_only_them(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


def test_registered_secrets_are_masked_wherever_they_appear() -> None:
    logs.add_secret("https://hooks.slack.com/services/T0/B0/SECRETPATH")
    logs.add_secret("abc")  # too short to mask safely: ignored
    assert logs.redact("posting to https://hooks.slack.com/services/T0/B0/SECRETPATH failed") == (
        "posting to *** failed"
    )
    assert logs.redact("abc def") == "abc def"


def record(message: str, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("postdeploy.engine", logging.WARNING, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def test_json_lines_carry_review_and_check() -> None:
    formatter = logs.JsonFormatter()
    line = json.loads(formatter.format(record("check failed", review="shop/r1", check="error-rate")))
    assert line["level"] == "WARNING" and line["logger"] == "postdeploy.engine"
    assert line["message"] == "check failed"
    assert (line["review"], line["check"]) == ("shop/r1", "error-rate")
    assert line["time"].endswith("+00:00")
    kopf_ref = {"kind": "PostDeploymentReview", "name": "r2", "namespace": "shop", "apiVersion": "x"}
    assert json.loads(formatter.format(record("handled", k8s_ref=kopf_ref)))["review"] == "shop/r2"
    other = {"kind": "Deployment", "name": "checkout", "namespace": "shop"}
    assert "review" not in json.loads(formatter.format(record("event", k8s_ref=other)))


def test_tracebacks_are_redacted_in_both_formats() -> None:
    try:
        raise ConnectionError("postgresql://app:hunter22@db/x refused")
    except ConnectionError:
        entry = record("measure failed")
        entry.exc_info = sys.exc_info()
    assert "hunter22" not in json.loads(logs.JsonFormatter().format(entry))["exception"]
    assert "hunter22" not in logs.TextFormatter().format(entry)


def test_configure_installs_one_handler() -> None:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        logs.configure("json", logging.INFO)
        logs.configure("json", logging.DEBUG)
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, logs.JsonFormatter)
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
