#!/bin/sh
# Runs once, when the timescaledb volume is first initialised (after the image's own
# 000_install_timescaledb.sh and 001_timescaledb_tune.sh). The postgres image sources
# *.sh files that are not executable, so this file never calls `exit`.
#
# Creates the role that Grafana's provisioned datasource logs in as
# (deploy/grafana/provisioning/datasources/hub.yaml): it may connect, it can only read,
# and it is granted no table here. Grafana OSS lets every user of an organisation query
# every datasource of that organisation, so this role must see only what operators'
# dashboards need; `hub grafana build` (or `sync`) grants it SELECT on the hub's counters
# and nothing of any feed. Organisations get their own logins and datasources from
# `hub grafana build|sync` (docs/dashboards.md), not from here.
#
# Set GRAFANA_DB_USER=postgres to skip this and let Grafana use the superuser instead
# (not recommended: every Grafana user could then read and change everything).

if [ "${GRAFANA_DB_USER:-hub_grafana}" != "${POSTGRES_USER:-postgres}" ]; then
    psql -v ON_ERROR_STOP=1 --no-psqlrc \
        --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-hub}" \
        --set=role="${GRAFANA_DB_USER:-hub_grafana}" \
        --set=password="${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD (see deploy/.env.example)}" \
        --set=db="${POSTGRES_DB:-hub}" <<'EOSQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
ALTER ROLE :"role" SET default_transaction_read_only = on;
ALTER ROLE :"role" SET statement_timeout = '60s';
GRANT CONNECT ON DATABASE :"db" TO :"role";
EOSQL
fi
