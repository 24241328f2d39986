#!/bin/sh
# Entry point of the `mosquitto` compose service (eclipse-mosquitto:2.0, busybox sh).
#
# 1. Makes sure the password and ACL files exist in the `mqtt-auth` volume, owned by
#    uid 1883 (the image's `mosquitto` user, and the uid the hub image runs as), so
#    that both Mosquitto and the hub can use them.
# 2. Makes sure the hub's own user (HUB_MQTT_SERVICE_USER) can log in with
#    HUB_MQTT_SERVICE_PASSWORD: its password is (re)set on every start, so rotating the
#    secret in .env takes effect on `docker-compose up -d`; its ACL section is added
#    when missing. Everything else in the files belongs to the hub (`hub apply`).
# 3. Starts Mosquitto and sends it SIGHUP whenever passwd or acl change: the hub runs in
#    another container and cannot signal it. SIGHUP reloads both files without
#    dropping connected clients.
# Environment paths can be overridden to try this script outside a container.
set -eu

AUTH_DIR=${MOSQUITTO_AUTH_DIR:-/mosquitto/config}
DATA_DIR=${MOSQUITTO_DATA_DIR:-/mosquitto/data}
CONF=${MOSQUITTO_CONF:-/etc/hub-mosquitto/mosquitto.conf}
RUN_AS=${MOSQUITTO_RUN_AS:-mosquitto}
INTERVAL=${MOSQUITTO_RELOAD_INTERVAL_S:-2}
SERVICE_USER=${HUB_MQTT_SERVICE_USER:-hub-service}
NAMESPACE_ROOT=${HUB_MQTT_NAMESPACE_ROOT:-partners}
ERROR_ROOT=${HUB_MQTT_ERROR_ROOT:-hub/errors}
: "${HUB_MQTT_SERVICE_PASSWORD:?set HUB_MQTT_SERVICE_PASSWORD (see deploy/.env.example)}"

log() { echo "hub-mosquitto: $*"; }

mkdir -p "$AUTH_DIR" "$DATA_DIR"
for f in passwd acl; do
    [ -e "$AUTH_DIR/$f" ] || : > "$AUTH_DIR/$f"
done

mosquitto_passwd -b "$AUTH_DIR/passwd" "$SERVICE_USER" "$HUB_MQTT_SERVICE_PASSWORD"
if ! grep -qx "user $SERVICE_USER" "$AUTH_DIR/acl"; then
    log "adding ACL section for $SERVICE_USER"
    {
        echo ""
        echo "user $SERVICE_USER"
        echo "topic read $NAMESPACE_ROOT/#"
        echo "topic write $ERROR_ROOT/#"
        echo "topic read \$SYS/#"
    } >> "$AUTH_DIR/acl"
fi

chown "$RUN_AS:$RUN_AS" "$AUTH_DIR" "$AUTH_DIR/passwd" "$AUTH_DIR/acl" "$DATA_DIR"
chmod 0700 "$AUTH_DIR"
chmod 0600 "$AUTH_DIR/passwd" "$AUTH_DIR/acl"

stamp() { cat "$AUTH_DIR/passwd" "$AUTH_DIR/acl" 2>/dev/null | md5sum; }

mosquitto -c "$CONF" &
pid=$!
log "mosquitto started (pid $pid); reloading passwd/acl on change every ${INTERVAL}s"

stop() { kill -TERM "$pid" 2>/dev/null || true; }
trap stop TERM INT

last=$(stamp)
while kill -0 "$pid" 2>/dev/null; do
    sleep "$INTERVAL" &
    wait $! || true
    now=$(stamp)
    if [ "$now" != "$last" ]; then
        log "passwd or acl changed: reloading"
        kill -HUP "$pid" 2>/dev/null || true
        last=$now
    fi
done

status=0
wait "$pid" || status=$?
log "mosquitto exited with status $status"
exit "$status"
