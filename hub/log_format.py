"""How hub processes log: plain text lines by default, one JSON object per line with `HUB_LOG_FORMAT=json`.

Either way every record passes `Redact` first: a password in a URL (`postgresql://user:secret@host`)
or after `password=` / `"password": ` never reaches a log line, whoever wrote the message (the
hub, a driver, an exception's text).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable

PLAIN = "%(asctime)s %(name)s %(levelname)s %(message)s"

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?=@)")
_PASSWORD_VALUE = re.compile(
    r"(?P<head>(?:password|passwd|secret|token)[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&)]+", re.IGNORECASE
)


def redact(text: str) -> str:
    """`text` with every password it shows replaced by `***`."""
    text = _URL_PASSWORD.sub(r"\g<head>***", text)
    return _PASSWORD_VALUE.sub(r"\g<head>***", text)


class Redact(logging.Filter):
    """A handler filter: the record's message (arguments filled in) and its exception text, without secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonLines(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, pid, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False)


def configure(
    fmt: str | None = None, level: int = logging.INFO, filters: Iterable[logging.Filter] = ()
) -> logging.Handler:
    """Log to stderr in `fmt` (`plain` or `json`; default: HUB_LOG_FORMAT, else plain), replacing other handlers."""
    fmt = (fmt or os.environ.get("HUB_LOG_FORMAT") or "plain").lower()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(PLAIN))
    handler.addFilter(Redact())
    for f in filters:
        handler.addFilter(f)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
