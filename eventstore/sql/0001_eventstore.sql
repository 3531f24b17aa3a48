-- Concord event store: spaces, the append-only event log, current membership, and the
-- transactional outbox the relay drains. See docs/eventstore.md.
--
-- Type choices, for speed and size:
--   * ids are uuid (16 bytes, binary compare, cheap index keys) rather than text (37 bytes);
--   * seq and lamport are bigint (lamport reaches 2^53 - 1);
--   * value is json holding the RFC 8785 canonical text of the value: PostgreSQL only
--     checks its syntax on input (jsonb would re-parse it into a tree on every insert), it
--     comes back byte for byte, so hashes recompute exactly, and it accepts every string a
--     client may send (jsonb refuses \u0000). The ->/->> operators still work on it;
--   * pred is uuid[]; payload and chain hashes are bytea (32 bytes of SHA-256).

CREATE TABLE spaces (
    space_id    uuid PRIMARY KEY,
    name        text NOT NULL,
    personal    boolean NOT NULL DEFAULT false,
    created_by  uuid,
    -- The last seq stored in the space: seqs are exactly 1..head (gapless).
    head        bigint NOT NULL DEFAULT 0 CHECK (head >= 0),
    -- The highest lamport stored in the space (0 if none).
    max_lamport bigint NOT NULL DEFAULT 0 CHECK (max_lamport >= 0),
    -- chain_hash of the event at head (32 zero bytes before the first event), so an
    -- append never reads the last event back.
    chain_tip   bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to spaces: every writer locks the space row first (so it exists), and
-- a per-row FK check would cost a lookup and a KEY SHARE lock per inserted event.
CREATE TABLE events (
    space_id       uuid        NOT NULL,
    seq            bigint      NOT NULL CHECK (seq >= 1),
    op_id          uuid        NOT NULL,
    entity_type    text        NOT NULL,
    entity_id      text        NOT NULL,
    kind           text        NOT NULL,
    field          text,
    value          json,
    pred           uuid[]      NOT NULL DEFAULT '{}',
    lamport        bigint      NOT NULL CHECK (lamport >= 0),
    device_id      uuid        NOT NULL,
    user_id        uuid,
    client_time    text,
    recorded_at    timestamptz NOT NULL,
    schema_version integer     NOT NULL,
    -- SHA-256 of the RFC 8785 canonical payload (PROTOCOL section 2, Idempotency):
    -- a replayed op_id with another payload is op_id_conflict.
    payload_hash   bytea       NOT NULL,
    -- SHA-256 over the previous event's chain_hash and this event's canonical encoding
    -- (eventstore/chain.py): verify() finds the first altered row.
    chain_hash     bytea       NOT NULL,
    -- Reading a space after a seq (sync, pull, relay, replay) walks this index.
    PRIMARY KEY (space_id, seq),
    -- Idempotency and pred lookups: one op_id, one event, per space.
    UNIQUE (space_id, op_id)
);

-- One entity's events in seq order (history, replay_entity, append-time conflicts).
CREATE INDEX events_entity_idx ON events (space_id, entity_type, entity_id, seq);

-- Append-only, enforced by the database itself (DESIGN invariant 5).
CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Current role of each member. Role history is the log itself: every change writes a
-- member_added / member_role_changed / member_removed event in the same transaction,
-- and since_seq points at the event that set the current role.
CREATE TABLE members (
    space_id  uuid   NOT NULL REFERENCES spaces (space_id),
    user_id   uuid   NOT NULL,
    role      text   NOT NULL CHECK (role IN ('owner', 'editor', 'reader')),
    since_seq bigint NOT NULL,
    PRIMARY KEY (space_id, user_id)
);

CREATE INDEX members_user_idx ON members (user_id);

-- Transactional outbox for the relay (DESIGN step 6). Each transaction that appends to a
-- space inserts one row naming the space's new head; the relay claims rows with
-- FOR UPDATE SKIP LOCKED, publishes the space's events after its cursor up to that head,
-- advances the cursor and deletes the rows. Appenders only ever insert distinct keys
-- (heads are gapless), so they never contend with the relay.
CREATE TABLE outbox (
    space_id uuid   NOT NULL,
    head     bigint NOT NULL,
    PRIMARY KEY (space_id, head)
);

CREATE TABLE outbox_cursors (
    space_id      uuid   PRIMARY KEY REFERENCES spaces (space_id),
    published_seq bigint NOT NULL DEFAULT 0
);
