"""The catalog's tables for organisations and agreements (issue 20), appended to `CATALOG_DDL`.

- `hub.organisations`: organisations that read without publishing (partners are in `hub.partners`);
- `hub.agreements`: every agreement applied, as written (`spec`), where from, and whether revoked;
- `hub.agreement_events`: append-only: created, changed, revoked, expired; by whom, before and after.
  A trigger refuses UPDATE, DELETE and TRUNCATE for every role, the hub's own included (`ENABLE ALWAYS`:
  also under `session_replication_role = replica`); only a superuser who drops the trigger could edit it.
- `hub.pgaudit_lines()`, `hub.audit_capability()`: pgaudit's read log (the server's jsonlog files) read
  back through SQL, and whether read auditing is on at all (SECURITY DEFINER: readers need no superuser).
"""

from __future__ import annotations

AGREEMENTS_DDL = """
CREATE TABLE IF NOT EXISTS hub.organisations (
    id text PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL,
    contact text NOT NULL,
    connection_limit int NOT NULL,
    config_file text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS hub.agreements (
    id text PRIMARY KEY,
    provider text NOT NULL,
    spec jsonb NOT NULL,
    source text NOT NULL,
    line int,
    clause_lines int[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    revoked_at timestamptz,
    revoked_by text,
    revoked_reason text,
    expiry_recorded boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS hub.agreement_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    db_role text NOT NULL DEFAULT session_user CHECK (db_role = session_user),
    actor text NOT NULL,
    agreement_id text NOT NULL,
    action text NOT NULL CHECK (action IN ('created', 'changed', 'revoked', 'expired')),
    reason text,
    before jsonb,
    after jsonb
);
REVOKE ALL ON hub.agreement_events FROM PUBLIC;
CREATE OR REPLACE FUNCTION hub.refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END$$;
REVOKE ALL ON FUNCTION hub.refuse_audit_change() FROM PUBLIC;
CREATE OR REPLACE TRIGGER agreement_events_append_only BEFORE UPDATE OR DELETE ON hub.agreement_events
    FOR EACH ROW EXECUTE FUNCTION hub.refuse_audit_change();
CREATE OR REPLACE TRIGGER agreement_events_no_truncate BEFORE TRUNCATE ON hub.agreement_events
    FOR EACH STATEMENT EXECUTE FUNCTION hub.refuse_audit_change();
ALTER TABLE hub.agreement_events ENABLE ALWAYS TRIGGER agreement_events_append_only;
ALTER TABLE hub.agreement_events ENABLE ALWAYS TRIGGER agreement_events_no_truncate;

-- Whether read auditing can work here: pgaudit installed, preloaded, and logs written where
-- hub.pgaudit_lines() reads them (the logging collector writing jsonlog files).
CREATE OR REPLACE FUNCTION hub.audit_capability(OUT pgaudit_installed bool, OUT pgaudit_preloaded bool,
    OUT log_destination text, OUT logging_collector bool)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pgaudit'),
       'pgaudit' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ',')),
       current_setting('log_destination'),
       current_setting('logging_collector')::bool
$$;
REVOKE ALL ON FUNCTION hub.audit_capability() FROM PUBLIC;

-- pgaudit's lines (and refused statements, SQLSTATE 42501) of organisation roles and of their Grafana logins
-- (+16: they read as them), since a time, from the server's jsonlog files. Only complete lines: the newest
-- file may end mid-line while it is written.
CREATE OR REPLACE FUNCTION hub.pgaudit_lines(since timestamptz DEFAULT '-infinity')
RETURNS TABLE (at timestamptz, role text, session_id text, kind text, message text, statement text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF NOT current_setting('logging_collector')::bool OR current_setting('log_destination') NOT LIKE '%jsonlog%' THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT (j->>'timestamp')::timestamptz, j->>'user', j->>'session_id',
           CASE WHEN j->>'message' LIKE 'AUDIT: %' THEN 'read' ELSE 'refused' END,
           j->>'message', j->>'statement'
    FROM pg_ls_logdir() AS f
    CROSS JOIN LATERAL (SELECT pg_read_file(current_setting('log_directory') || '/' || f.name) AS body) b
    CROSS JOIN LATERAL regexp_split_to_table(left(b.body, length(b.body) - strpos(reverse(b.body), E'\\n')), E'\\n')
        AS line
    CROSS JOIN LATERAL (SELECT line::jsonb AS j) x
    WHERE f.name LIKE '%.json' AND f.modification >= date_trunc('second', since) AND line LIKE '{%'
      AND (j->>'user' LIKE 'org\\_%' OR j->>'user' LIKE 'hub\\_grafana\\_%')
      AND (j->>'message' LIKE 'AUDIT: %' OR j->>'state_code' = '42501')
      AND (j->>'timestamp')::timestamptz >= since
    ORDER BY 1;
END$$;
REVOKE ALL ON FUNCTION hub.pgaudit_lines(timestamptz) FROM PUBLIC;
"""
