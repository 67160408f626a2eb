-- alkhub schema, PostgreSQL.

CREATE TABLE spokes (
    id                TEXT PRIMARY KEY,
    name              TEXT,
    token_hash        TEXT NOT NULL UNIQUE,
    scopes            JSONB NOT NULL DEFAULT '[]',
    labels            JSONB NOT NULL DEFAULT '{}',
    enabled           BOOLEAN NOT NULL DEFAULT TRUE,
    last_connected_at TIMESTAMPTZ,
    last_seen_at      TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);

CREATE TABLE clients (
    id                TEXT PRIMARY KEY,
    name              TEXT,
    token_hash        TEXT NOT NULL UNIQUE,
    scopes            JSONB NOT NULL DEFAULT '[]',
    labels            JSONB NOT NULL DEFAULT '{}',
    enabled           BOOLEAN NOT NULL DEFAULT TRUE,
    last_connected_at TIMESTAMPTZ,
    last_seen_at      TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);

CREATE TABLE operations (
    id              TEXT PRIMARY KEY,
    namespace       TEXT NOT NULL,
    name            TEXT NOT NULL,
    type            TEXT NOT NULL CHECK (type IN ('query', 'mutation', 'subscription')),
    input_schema    JSONB,
    output_schema   JSONB,
    access_level    TEXT NOT NULL DEFAULT 'authenticated'
                    CHECK (access_level IN ('public', 'authenticated', 'scoped', 'internal')),
    required_scopes JSONB NOT NULL DEFAULT '[]',
    description     TEXT,
    source          TEXT NOT NULL CHECK (source IN ('spoke', 'openapi', 'mcp', 'builtin')),
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    CHECK (id = namespace || '.' || name)
);

CREATE UNIQUE INDEX operations_namespace_name_key ON operations (namespace, name);

CREATE TABLE operation_registrations (
    id                  TEXT PRIMARY KEY,
    operation_id        TEXT NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    provider_type       TEXT NOT NULL CHECK (provider_type IN ('spoke', 'client')),
    provider_id         TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('active', 'inactive')),
    pre_remap_namespace TEXT NOT NULL,
    pre_remap_name      TEXT NOT NULL,
    metadata            JSONB NOT NULL DEFAULT '{}',
    registered_at       TIMESTAMPTZ NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX operation_registrations_active_key
    ON operation_registrations (operation_id, provider_type, provider_id)
    WHERE status = 'active';
CREATE INDEX operation_registrations_provider_idx
    ON operation_registrations (provider_type, provider_id);
CREATE INDEX operation_registrations_operation_idx
    ON operation_registrations (operation_id, status);
