"""The MQTT broker's accounts: who may connect with which client id, and what each may publish and read.

`accounts.py` says what the hub wants (pure), `reconcile.py` what to change to get there (pure),
`dynsec.py` talks to Mosquitto's dynamic security plugin (the `BrokerAuth` the edges pass to the
control plane), `broker_log.py` reads the broker's log lines for session takeovers (pure).
"""

from hub.mqtt_auth.accounts import generate_secret, hash_password, verify_password
from hub.mqtt_auth.dynsec import BrokerAuth, DynsecBroker

__all__ = ["BrokerAuth", "DynsecBroker", "generate_secret", "hash_password", "verify_password"]
