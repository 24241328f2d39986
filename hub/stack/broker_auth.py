"""The local stack's Mosquitto as `hub apply` sees it: password and ACL files in its directory, reloaded by SIGHUP.

With `HUB_MOSQUITTO_AUTH_DIR` set (docker compose: a volume the broker's entry point watches),
the files go there and reloading is left to whoever watches them.
"""

from __future__ import annotations

from pathlib import Path

from hub.mqtt_auth import MqttUser, write_mqtt_auth
from hub.settings import HubSettings
from hub.stack import servers


class LocalBrokerAuth:
    def __init__(self, settings: HubSettings) -> None:
        self.state = settings.state_dir.resolve()
        self.external = settings.mosquitto_auth_dir
        self.directory: Path = self.external or servers.mosquitto_process(self.state).state_dir

    def write(self, users: list[MqttUser]) -> None:
        write_mqtt_auth(self.directory, users)

    def reload(self) -> bool:
        if self.external is not None:
            return False
        return servers.reload_mosquitto(self.state)
