"""The local stack's Mosquitto as the control plane sees it: its dynamic security API, as the hub's admin.

The same `DynsecBroker` serves any Mosquitto 2 with the plugin (docker compose's included): only the
address and the admin login differ, and both come from `HUB_MQTT_URL` or the local stack's state.
"""

from __future__ import annotations

from hub.mqtt_auth.dynsec import DynsecBroker
from hub.settings import HubSettings


class LocalBrokerAuth(DynsecBroker):
    def __init__(self, settings: HubSettings) -> None:
        broker = DynsecBroker.from_settings(settings)
        super().__init__(broker.address, broker.tls_ca)
