-- Provider grants, definition owners, and the session behind each active
-- registration.
--
-- `provides`: a JSON array of operation-id patterns the principal may provide
-- (`*` matches any characters); NULL is the default (spokes: every namespace
-- except `hub` and those owned by an import; clients: nothing).
-- `owner_kind`/`owner_id`: whose declaration (or which import) created the
-- definition; only the owner changes its description, access level and
-- scopes. NULL: unknown (a definition older than this migration with no
-- registration), claimed by the next granted provider that declares it.
-- `session_id`: the session that last activated the registration; ending a
-- session deactivates only the active rows that still carry its id.

ALTER TABLE spokes ADD COLUMN provides JSONB;
ALTER TABLE clients ADD COLUMN provides JSONB;

ALTER TABLE operations ADD COLUMN owner_kind TEXT
    CHECK (owner_kind IN ('spoke', 'client', 'import'));
ALTER TABLE operations ADD COLUMN owner_id TEXT;

ALTER TABLE operation_registrations ADD COLUMN session_id TEXT;

-- Existing definitions: an import owns what it defined; a spoke-sourced
-- definition belongs to the provider of its oldest registration.
UPDATE operations o
   SET owner_kind = 'import', owner_id = i.name
  FROM imports i
 WHERE i.operations @> jsonb_build_array(o.id);

UPDATE operations
   SET owner_kind = (SELECT r.provider_type FROM operation_registrations r
                      WHERE r.operation_id = operations.id
                      ORDER BY r.created_at, r.id LIMIT 1),
       owner_id = (SELECT r.provider_id FROM operation_registrations r
                    WHERE r.operation_id = operations.id
                    ORDER BY r.created_at, r.id LIMIT 1)
 WHERE source = 'spoke' AND owner_kind IS NULL;

CREATE INDEX operation_registrations_session_idx
    ON operation_registrations (session_id)
    WHERE status = 'active';
