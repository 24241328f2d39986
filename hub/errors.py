"""One exception hierarchy for the whole hub.

Every error a person can see derives from `HubError`, and its message says what
to fix. Driver errors (asyncpg, aiokafka, paho) are translated at the boundary of
the module that talks to that server, never leaked.
"""

from __future__ import annotations


def shortened(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying how long it was: a message never echoes a large input whole."""
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 30, 0)]}... ({len(text):,} characters)"


class HubError(Exception):
    """Something the hub could not do; the message says what to try.

    `retriable`: whether the same call may succeed later without anyone changing anything (a
    server that restarts); hub/retriable.py decides it for driver errors too.
    """

    retriable = False


class ConfigError(HubError):
    """A connector config or setting is invalid."""

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.file = file
        self.line = line
        self.field = field
        where = file or ""
        if line is not None:
            where += f":{line}"
        if field:
            where += f" [{field}]" if where else field
        super().__init__(f"{where}: {reason}" if where else reason)


class SchemaError(HubError):
    """An Avro schema is invalid or breaks a compatibility rule."""


class IdentifierError(HubError):
    """A name that would reach SQL, a topic or an ACL is not a safe identifier."""


class AccessDenied(HubError):
    """No agreement grants this organisation what it asked for."""


class NotFound(HubError):
    """A partner, feed, schema or subject does not exist."""


class ServerUnavailable(HubError):
    """A server the hub depends on cannot be reached."""

    retriable = True

    def __init__(self, server: str, address: str, hint: str) -> None:
        self.server = server
        self.address = address
        super().__init__(f"{server} at {address} is unavailable: {hint}")


class BrokerAccountsError(HubError):
    """The MQTT broker's accounts cannot be read or changed (its dynamic security API refused or is absent)."""


class StackError(HubError):
    """The local stack cannot be started, inspected or stopped."""


class PayloadError(HubError):
    """A device message cannot be turned into a valid record.

    `code` is machine-readable (it goes into dead-letter headers and error reports);
    the message says what is wrong in the partner's words.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)
