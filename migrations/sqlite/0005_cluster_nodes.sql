-- Cluster nodes (docs/cluster.md). Cluster mode needs PostgreSQL; the
-- table exists here too so that both engines have one schema.
CREATE TABLE cluster_nodes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    lease_until TEXT NOT NULL
);

CREATE TABLE cluster_import_owners (
    name  TEXT PRIMARY KEY,
    node  TEXT NOT NULL,
    since TEXT NOT NULL
);
