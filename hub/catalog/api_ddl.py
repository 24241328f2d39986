"""The catalog's tables for the HTTP API and its page (issue 17), appended to `CATALOG_DDL`.

- `hub.api_tokens`: organisations' API tokens, only a SHA-256 of each (a token is 256 random bits, so a
  fast hash is enough: nothing to guess); revoked tokens are kept, with who revoked them and when.
- `hub.access_requests`: an organisation asks a provider for a feed (fields, form, delivery, purpose); the
  provider approves (an agreement file is written and applied: `agreement_id`, `agreement_file`) or refuses,
  with a reason. The agreement's own audit trail is `hub.agreement_events`.
"""

from __future__ import annotations

API_DDL = """
CREATE TABLE IF NOT EXISTS hub.api_tokens (
    id text PRIMARY KEY,
    org_id text NOT NULL,
    token_hash text NOT NULL UNIQUE,
    label text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    revoked_at timestamptz,
    revoked_by text
);
CREATE INDEX IF NOT EXISTS api_tokens_by_org ON hub.api_tokens (org_id);
REVOKE ALL ON hub.api_tokens FROM PUBLIC;
CREATE TABLE IF NOT EXISTS hub.access_requests (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer text NOT NULL,
    provider text NOT NULL,
    feed text NOT NULL,
    form text NOT NULL CHECK (form IN ('raw', 'aggregate')),
    fields text[],
    delivery text[] NOT NULL,
    purpose text NOT NULL,
    valid_until timestamptz,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'refused')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    requested_by text NOT NULL,
    decided_at timestamptz,
    decided_by text,
    reason text,
    agreement_id text,
    agreement_file text
);
CREATE INDEX IF NOT EXISTS access_requests_by_consumer ON hub.access_requests (consumer, status);
CREATE INDEX IF NOT EXISTS access_requests_by_provider ON hub.access_requests (provider, status);
"""
