-- The read model lists entities in code-point order of (entity_type, entity_id), whatever
-- the database's collation: the order the gateway uses when it folds a listing from the
-- log instead (docs/architecture.md invariant 4: the same answers either way).
--
-- With the database's default collation, a language one (en_US.UTF-8, or ICU), PostgreSQL
-- put "a" before "B" and ordered "task-1" by its letters alone, where the log's listing
-- sorts code points: a listing answered by the read model then came in another order
-- than the same listing folded from the log, and a cursor handed out by one could skip
-- or repeat entities on the other. "C" compares bytes, which in UTF-8 is code-point
-- order. The primary key's index is rebuilt; the table's rows are not rewritten.
ALTER TABLE entity_states
    ALTER COLUMN entity_type TYPE text COLLATE "C",
    ALTER COLUMN entity_id TYPE text COLLATE "C";
