"""While a server is away a worker logs when it went away and when it came back, and nothing per retry."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from hub.errors import ServerUnavailable
from hub.outage import DriverNoise, Outages
from hub.retriable import server_of


def test_an_outage_is_one_line_going_and_one_coming_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outages = Outages(logging.getLogger("hub.test"), clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="hub.test")
    for _ in range(50):
        outages.failed("write a batch", ConnectionRefusedError(111, "Connect call failed"), "PostgreSQL")
        now[0] += 0.5
    outages.back("PostgreSQL")
    outages.back("PostgreSQL")  # already back: nothing more
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert loud == [
        "PostgreSQL is unavailable (cannot write a batch: ConnectionRefusedError: [Errno 111] Connect call failed); "
        "retrying quietly until it is back",
        "PostgreSQL is back after 25.0 s (50 failed attempts)",
    ]
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 49


@pytest.mark.parametrize(
    ("exc", "hint", "server"),
    [
        (ServerUnavailable("Kafka", "127.0.0.1:9092", "down"), "PostgreSQL", "Kafka"),
        (asyncpg.CannotConnectNowError("shutting down"), "Kafka", "PostgreSQL"),
        (KafkaConnectionError(), None, "Kafka"),
        (ConnectionRefusedError(111, "refused"), "PostgreSQL", "PostgreSQL"),  # either client raises it: the hint
        (TimeoutError(), None, "PostgreSQL or Kafka"),
    ],
)
def test_the_server_a_failure_is_about(exc: BaseException, hint: str | None, server: str) -> None:
    assert server_of(exc, hint) == server


def record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_the_kafka_clients_reconnect_errors_become_debug_and_nothing_else_does() -> None:
    noise = DriverNoise()
    unreachable = record("aiokafka", logging.ERROR, "Unable connect to node with id 1: [Errno 111] Connect call failed")
    assert noise.filter(unreachable) is False and unreachable.levelno == logging.DEBUG
    other = record("aiokafka.consumer.fetcher", logging.ERROR, "Unexpected error in fetcher routine")
    assert noise.filter(other) is True and other.levelno == logging.ERROR
    ours = record("hub.land", logging.WARNING, "Kafka is unavailable (Connect call failed)")
    assert noise.filter(ours) is True and ours.levelno == logging.WARNING
