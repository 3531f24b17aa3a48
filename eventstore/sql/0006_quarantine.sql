-- Events the projector could not apply: set aside so that one bad event never stalls its
-- space (docs/projector.md, "Quarantine").
--
-- A row is written in the same transaction as the checkpoint that moves past its event,
-- so "in the read model" and "quarantined" never both hold, and neither is ever lost.
-- The read model is the fold of every event of the log up to the checkpoint but these;
-- reads of an entity with a row here replay the entity from the log instead. A rebuild
-- tries every event again and replaces this table with the shadow's own.

CREATE TABLE projector_quarantine (
    space_id       uuid        NOT NULL,
    seq            bigint      NOT NULL,
    op_id          uuid        NOT NULL,
    entity_type    text        NOT NULL,
    entity_id      text        NOT NULL,
    -- The exception class (and SQLSTATE, for a database error): what operators see.
    error_type     text        NOT NULL,
    -- Its message, for whoever reads this table; never shown by diagnostics (it may
    -- quote a value).
    error          text        NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (space_id, seq)
);

-- Reads ask, per entity, whether the read model lacks one of its events.
CREATE INDEX projector_quarantine_entity_idx
    ON projector_quarantine (space_id, entity_type, entity_id);
