"""(+22) The live share streams' tables (hub/share/): where each lane of the share workers stands in each
feed topic, what each stream shared, and the last aggregate window each emitted.

Positions live here, not in Kafka's committed offsets, for the reason landing's do (the local broker
forgets committed offsets on a restart): `epoch` is the broker epoch (hub.land_broker) they refer to,
and a position of another epoch counts as 0. Landing's freeing of the local broker's memory waits for
these positions too, and sets them back to 0 with its own when it recreates a topic.
"""

SHARE_DDL = """
CREATE TABLE IF NOT EXISTS hub.share_offsets (
    lane text NOT NULL,
    topic text NOT NULL,
    kafka_partition int NOT NULL,
    next_offset bigint NOT NULL,
    epoch text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lane, topic, kafka_partition)
);
CREATE TABLE IF NOT EXISTS hub.share_counters (
    stream text PRIMARY KEY,
    agreement_id text NOT NULL,
    consumer text NOT NULL,
    feed text NOT NULL,
    form text NOT NULL,
    lane text NOT NULL,
    records bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0,
    last_shared_at timestamptz,
    last_event_time timestamptz
);
CREATE TABLE IF NOT EXISTS hub.share_windows (
    stream text PRIMARY KEY,
    last_window timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS hub.share_logins (
    org_id text PRIMARY KEY,
    username text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz NOT NULL DEFAULT now()
);
"""
