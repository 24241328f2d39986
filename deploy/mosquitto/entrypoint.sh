#!/bin/sh
# Entry point of the `mosquitto` compose service (eclipse-mosquitto:2.0, busybox sh).
#
# Accounts, client-id bindings and ACLs live in the dynamic security plugin's file, written once
# by the `mosquitto-init` service (`hub broker-init`) before the broker first starts, and changed
# afterwards only through the plugin's API by the hub (`hub apply`, `hub devices`, the workers'
# own logins): no reload is needed. This script gives its directory to the broker's user (the
# plugin writes `<file>.new` there and renames it, from 2.0.16) and starts Mosquitto.
# Environment paths can be overridden to try this script outside a container.
set -eu

DYNSEC_DIR=${MOSQUITTO_DYNSEC_DIR:-/mosquitto/dynsec}
DATA_DIR=${MOSQUITTO_DATA_DIR:-/mosquitto/data}
CONF=${MOSQUITTO_CONF:-/etc/hub-mosquitto/mosquitto.conf}
RUN_AS=${MOSQUITTO_RUN_AS:-mosquitto}

if [ ! -s "$DYNSEC_DIR/dynsec.json" ]; then
    echo "hub-mosquitto: $DYNSEC_DIR/dynsec.json is missing: the mosquitto-init service writes it" >&2
    exit 1
fi
mkdir -p "$DATA_DIR"
chown -R "$RUN_AS:$RUN_AS" "$DYNSEC_DIR" "$DATA_DIR"
chmod 0700 "$DYNSEC_DIR"
chmod 0600 "$DYNSEC_DIR/dynsec.json"
exec mosquitto -c "$CONF"
