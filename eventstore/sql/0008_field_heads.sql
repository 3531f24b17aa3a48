-- The heads of every field that has been set: the op_ids of its stored sets that no
-- later set of the field names in its pred (docs/eventstore.md, "Conflicts"). An append
-- reads one row per field it sets, instead of every stored set of the field, so the
-- cost of an op does not grow with its field's history, and writes the new heads of the
-- fields it changed in the same transaction, under the space lock (the only writers of
-- a space's rows here hold that lock, so rows never wait on each other).
--
-- A field is keyed by a digest of its name, field_key(entity_type, entity_id, field):
-- a fixed 16-byte key keeps the index small and its comparisons cheap, and the append's
-- statements carry nothing but UUIDs. eventstore/heads.py computes the same key.
--
-- Room left on each page (fillfactor) so the frequent rewrites of a row stay on its
-- page (HOT updates: no index entry per rewrite).

-- The first 16 bytes of SHA-256 over the length-prefixed names (lengths in characters),
-- so no two different (entity_type, entity_id, field) read the same text.
CREATE FUNCTION field_key(entity_type text, entity_id text, field text) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT encode(substr(sha256(convert_to(
        length(entity_type) || ':' || entity_type || length(entity_id) || ':' || entity_id
        || field, 'UTF8')), 1, 16), 'hex')::uuid
$$;

CREATE TABLE field_heads (
    space_id  uuid   NOT NULL,
    field_key uuid   NOT NULL,
    heads     uuid[] NOT NULL,
    PRIMARY KEY (space_id, field_key)
) WITH (fillfactor = 80);

-- Backfill from the log. No event may be appended between this snapshot and COMMIT
-- (it would be missing here): SHARE mode blocks inserts into events until then. A
-- server older than this migration must not append after it (it would not keep the
-- table).
LOCK TABLE events IN SHARE MODE;

WITH named AS (
    -- (field, op_id) pairs that a set names in its pred, with the naming set's seq.
    SELECT l.space_id, l.entity_type, l.entity_id, l.field, p.op_id, l.seq
    FROM events l CROSS JOIN LATERAL unnest(l.pred) AS p(op_id)
    WHERE l.kind = 'set' AND l.field IS NOT NULL
)
INSERT INTO field_heads (space_id, field_key, heads)
SELECT e.space_id, field_key(e.entity_type, e.entity_id, e.field),
       array_agg(e.op_id ORDER BY e.seq)
FROM events e
WHERE e.kind = 'set' AND e.field IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM named n
      WHERE n.space_id = e.space_id AND n.entity_type = e.entity_type
        AND n.entity_id = e.entity_id AND n.field = e.field
        AND n.op_id = e.op_id AND n.seq > e.seq
  )
GROUP BY e.space_id, e.entity_type, e.entity_id, e.field;
