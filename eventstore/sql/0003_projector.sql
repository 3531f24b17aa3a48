-- Projector read model: the merged state of every entity, and how far each space is
-- projected. See docs/projector.md.
--
-- A batch of events updates entity_states AND projector_checkpoints in ONE transaction,
-- with the checkpoint row locked (FOR UPDATE): a crash and retry can never apply an
-- event twice or skip one, and two projector instances never apply one space at once.

CREATE TABLE entity_states (
    space_id          uuid    NOT NULL,
    entity_type       text    NOT NULL,
    entity_id         text    NOT NULL,
    -- crdt.encode_state of the merged state (everything a read needs).
    state             bytea   NOT NULL,
    -- The last space seq applied to this entity.
    applied_seq       bigint  NOT NULL,
    deleted           boolean NOT NULL DEFAULT false,
    -- False while only server events (reminder_fired, ...) touched it: reads answer 404.
    has_client_events boolean NOT NULL DEFAULT false,
    -- Typed columns the reference app (and the scheduler) query; null for other types.
    title             text,
    done              boolean,
    due_at            timestamptz,
    remind_at         timestamptz,
    list_id           text,
    -- op_id of the winning non-null remind_at set: the reminder_id (PROTOCOL section 7).
    remind_at_op_id   uuid,
    PRIMARY KEY (space_id, entity_type, entity_id)
);

-- The scheduler reconciles reminders over this.
CREATE INDEX entity_states_remind_at_idx ON entity_states (remind_at) WHERE remind_at IS NOT NULL;

-- Per space: every event with seq <= seq is applied to entity_states, none after it.
CREATE TABLE projector_checkpoints (
    space_id uuid   PRIMARY KEY,
    seq      bigint NOT NULL CHECK (seq >= 0)
);
