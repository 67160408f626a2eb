-- Cluster nodes (docs/cluster.md): one row per running node of a cluster,
-- which renews `lease_until` while it lives. A registration's `session_id`
-- is `<node id>-<session number>`, so the node that activated a row is the
-- part before the dash; when a node's lease lapses the others delete its
-- row and deactivate the registrations it activated.
CREATE TABLE cluster_nodes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);

-- Which node serves each import (one at a time): a node claims an import
-- whose owner is itself, or no longer live; a node that leaves drops its
-- claims.
CREATE TABLE cluster_import_owners (
    name  TEXT PRIMARY KEY,
    node  TEXT NOT NULL,
    since TIMESTAMPTZ NOT NULL
);
