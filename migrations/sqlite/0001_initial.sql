-- alkhub schema, SQLite. Timestamps are RFC 3339 text in UTC; JSON columns are text.

CREATE TABLE spokes (
    id                TEXT PRIMARY KEY NOT NULL,
    name              TEXT,
    token_hash        TEXT NOT NULL UNIQUE,
    scopes            TEXT NOT NULL DEFAULT '[]',
    labels            TEXT NOT NULL DEFAULT '{}',
    enabled           BOOLEAN NOT NULL DEFAULT TRUE,
    last_connected_at TEXT,
    last_seen_at      TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE clients (
    id                TEXT PRIMARY KEY NOT NULL,
    name              TEXT,
    token_hash        TEXT NOT NULL UNIQUE,
    scopes            TEXT NOT NULL DEFAULT '[]',
    labels            TEXT NOT NULL DEFAULT '{}',
    enabled           BOOLEAN NOT NULL DEFAULT TRUE,
    last_connected_at TEXT,
    last_seen_at      TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE operations (
    id              TEXT PRIMARY KEY NOT NULL,
    namespace       TEXT NOT NULL,
    name            TEXT NOT NULL,
    type            TEXT NOT NULL CHECK (type IN ('query', 'mutation', 'subscription')),
    input_schema    TEXT,
    output_schema   TEXT,
    access_level    TEXT NOT NULL DEFAULT 'authenticated'
                    CHECK (access_level IN ('public', 'authenticated', 'scoped', 'internal')),
    required_scopes TEXT NOT NULL DEFAULT '[]',
    description     TEXT,
    source          TEXT NOT NULL CHECK (source IN ('spoke', 'openapi', 'mcp', 'builtin')),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    CHECK (id = namespace || '.' || name)
);

CREATE UNIQUE INDEX operations_namespace_name_key ON operations (namespace, name);

CREATE TABLE operation_registrations (
    id                  TEXT PRIMARY KEY NOT NULL,
    operation_id        TEXT NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    provider_type       TEXT NOT NULL CHECK (provider_type IN ('spoke', 'client')),
    provider_id         TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('active', 'inactive')),
    pre_remap_namespace TEXT NOT NULL,
    pre_remap_name      TEXT NOT NULL,
    metadata            TEXT NOT NULL DEFAULT '{}',
    registered_at       TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE UNIQUE INDEX operation_registrations_active_key
    ON operation_registrations (operation_id, provider_type, provider_id)
    WHERE status = 'active';
CREATE INDEX operation_registrations_provider_idx
    ON operation_registrations (provider_type, provider_id);
CREATE INDEX operation_registrations_operation_idx
    ON operation_registrations (operation_id, status);
