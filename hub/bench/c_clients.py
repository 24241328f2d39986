"""The benchmark's C clients (mosquitto_pub, mosquitto_sub), each with a login of its own.

Every broker login is bound to one client id, so PUBLISHERS publishers running at once need as
many device logins (`hub devices add bench_lab pub-0 ...`), and the ceiling's counter its own.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

from hub.control import mqtt_logins
from hub.mqtt_auth.accounts import generate_secret
from hub.mqtt_auth.dynsec import DynsecBroker, provision_login
from hub.settings import HubSettings

CHUNK = 25_000
TOPIC = "partners/bench_lab/air/readings"
PUBLISHERS = 2  # C publishers at a time
COUNTER = "hub-bench-counter"  # the ceiling's C subscriber, reading TOPIC directly (no shared group)


class CClients:
    def __init__(self, settings: HubSettings) -> None:
        self.port = settings.mqtt_port
        devices = [f"pub-{i}" for i in range(PUBLISHERS)]
        self.logins = list(asyncio.run(mqtt_logins.add_devices(settings, "bench_lab", devices)).items())
        self.counter_password = generate_secret()
        asyncio.run(self._counter_login(DynsecBroker.from_settings(settings)))

    async def _counter_login(self, broker: DynsecBroker) -> None:
        acls = [{"acltype": t, "topic": "partners/bench_lab/#", "allow": True}
                for t in ("subscribePattern", "publishClientReceive")]  # fmt: skip
        await broker.run(
            [
                {"command": "createRole", "rolename": COUNTER, "acls": acls},
                {"command": "createGroup", "groupname": COUNTER},
                {"command": "addGroupRole", "groupname": COUNTER, "rolename": COUNTER},
            ]
        )
        await provision_login(broker, COUNTER, COUNTER, self.counter_password)

    def mosquitto_pub(self, login: tuple[str, str]) -> subprocess.Popen[bytes]:
        """A C publisher (QoS 1, 1,000 in flight) that sends each line of its stdin as one message."""
        username, password = login
        argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-u", username, "-P", password]
        argv += ["-i", username, "-q", "1", "-M", "1000", "-t", TOPIC, "-l"]
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, bufsize=0
        )

    def counter(self, n: int) -> subprocess.Popen[bytes]:
        """A C subscriber that prints each of `n` messages on TOPIC, as they arrive."""
        return subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-u", COUNTER, "-i", COUNTER,
             "-P", self.counter_password, "-q", "1", "-t", TOPIC, "-C", str(n), "-W", "120"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def publish_chunks(self, lines: list[bytes]) -> float:
        """Publish every line with `mosquitto_pub -l` in chunks of at most CHUNK, PUBLISHERS at a time, each
        with a login no running publisher uses; returns the start time (monotonic)."""
        chunks = [lines[i : i + CHUNK] for i in range(0, len(lines), CHUNK)]
        start = time.monotonic()
        running: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        for chunk in chunks:
            while len(running) >= len(self.logins):
                next(iter(running.values())).wait()
                running = {login: p for login, p in running.items() if p.poll() is None}
            login = next(x for x in self.logins if x not in running)
            p = self.mosquitto_pub(login)
            assert p.stdin is not None
            p.stdin.write(b"\n".join(chunk) + b"\n")
            p.stdin.close()
            running[login] = p
        for p in running.values():
            p.wait()
        return start
