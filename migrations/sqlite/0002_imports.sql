-- Imports: OpenAPI documents and MCP servers whose operations the hub defines
-- (and, when it can reach them, serves). `config` is JSON: where the import
-- came from and how to call it; secrets appear only as environment variable
-- names. `operations` is the JSON array of the operation ids it defined.

CREATE TABLE imports (
    name        TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('openapi', 'mcp')),
    namespace   TEXT NOT NULL,
    config      TEXT NOT NULL DEFAULT '{}',
    operations  TEXT NOT NULL DEFAULT '[]',
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
