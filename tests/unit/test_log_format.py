"""Logs: plain lines by default, one JSON object per line with HUB_LOG_FORMAT=json; a secret never reaches either."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from hub import log_format

SECRET = "s3cr3t-Pa55"


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, list[logging.Handler]]]:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    out = io.StringIO()
    yield out, before
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in before:
        root.addHandler(h)
    root.setLevel(level)


def configured(fmt: str, out: io.StringIO) -> logging.Logger:
    handler = log_format.configure(fmt)
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    return logging.getLogger("hub.test")


def test_json_lines_are_one_object_per_event_with_time_level_logger_and_message(
    captured: tuple[io.StringIO, list[logging.Handler]],
) -> None:
    out, _ = captured
    log = configured("json", out)
    log.warning("PostgreSQL is back after %.1f s (%d failed attempts)", 3.25, 4)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("a batch failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, "the traceback is inside its JSON line"
    first, second = (json.loads(line) for line in lines[:2])
    assert first["message"] == "PostgreSQL is back after 3.2 s (4 failed attempts)"
    assert (first["level"], first["logger"]) == ("WARNING", "hub.test")
    assert first["time"].endswith("Z") and isinstance(first["pid"], int)
    assert second["message"] == "a batch failed" and "RuntimeError: boom" in second["exception"]


def test_plain_is_the_default_format(captured: tuple[io.StringIO, list[logging.Handler]]) -> None:
    out, _ = captured
    log = configured("plain", out)
    log.info("ingest worker 0 started")
    (line,) = out.getvalue().splitlines()
    assert line.endswith(" hub.test INFO ingest worker 0 started")


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_secrets_never_reach_a_log_line_in_a_url_an_argument_or_an_exception(
    fmt: str, captured: tuple[io.StringIO, list[logging.Handler]]
) -> None:
    out, _ = captured
    log = configured(fmt, out)
    log.warning("cannot connect to postgresql://postgres:%s@db:5432/hub", SECRET)
    log.warning("MQTT url %s", f"mqtt://hub-admin:{SECRET}@mosquitto:1883")
    log.error("login refused: password=%s user=partner", SECRET)
    log.error("config %s", {"username": "hub", "password": SECRET})
    try:
        raise ConnectionError(f"postgresql://postgres:{SECRET}@db/hub refused")
    except ConnectionError:
        log.exception("connect failed")
    text = out.getvalue()
    assert SECRET not in text
    assert text.count("***") >= 5
    assert "postgresql://postgres:***@db:5432/hub" in text, "what is not secret stays readable"


def test_redact_leaves_text_without_secrets_alone() -> None:
    text = "hub.uni_air_lab.air_quality[2]@4411 (duplicate_key): time 2026-11-27T10:00:00Z, http://hub-api:8081/feeds"
    assert log_format.redact(text) == text
