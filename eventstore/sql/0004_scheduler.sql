-- Scheduler: reminders, the scheduler's view of each task that has one, and the history
-- of every background job run. See docs/scheduler.md.
--
-- Fed from <prefix>.reminders.<space_id> (the projector's ReminderChange) and reconciled
-- from the read model (entity_states, 0003) at start and on every sweep, so a lost NATS
-- message never loses a reminder.

-- The last task state the scheduler applied, per task. ``seq`` only grows: a state older
-- than the one applied (a late NATS message racing a reconciliation) is ignored, so the
-- reminders of a task always follow its newest known state. Taking this row's lock
-- (the upsert does) also serialises every change to the task's reminders.
CREATE TABLE reminder_tasks (
    space_id    uuid        NOT NULL,
    entity_type text        NOT NULL,
    entity_id   text        NOT NULL,
    seq         bigint      NOT NULL,
    -- op_id of the winning non-null remind_at set (NULL: none), its time, and whether
    -- the task is neither done nor deleted.
    reminder_id uuid,
    fire_at     timestamptz,
    active      boolean     NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (space_id, entity_type, entity_id)
);

-- How far (a space seq) reconciliation has read each space's projection: a sweep reads
-- only the spaces whose projector checkpoint moved past it.
CREATE TABLE reminder_cursors (
    space_id uuid   PRIMARY KEY,
    seq      bigint NOT NULL
);

-- One row per reminder, keyed by the op_id of its remind_at set (PROTOCOL section 7).
CREATE TABLE reminders (
    reminder_id     uuid        PRIMARY KEY,
    space_id        uuid        NOT NULL,
    entity_type     text        NOT NULL,
    entity_id       text        NOT NULL,
    fire_at         timestamptz NOT NULL,
    status          text        NOT NULL CHECK (status IN
                        ('scheduled', 'fired', 'cancelled', 'retrying', 'dead', 'skipped')),
    -- Delivery attempts (webhook POSTs when a webhook is configured, else the one in-app
    -- notification).
    attempts        integer     NOT NULL DEFAULT 0,
    -- When the next webhook attempt is due (NULL: no delivery pending).
    next_attempt_at timestamptz,
    last_error      text,
    lateness_ms     bigint,
    fired_at        timestamptz,
    -- seq of the reminder_fired / reminder_skipped event.
    event_seq       bigint,
    -- 'fire' or 'skip', fixed by the first claim: a retried firing (after a crash between
    -- the append and the status update) repeats the same decision, so one reminder never
    -- gets both a reminder_fired and a reminder_skipped event.
    decision        text        CHECK (decision IN ('fire', 'skip')),
    -- Lease: the instance working on the row and until when. An expired lease is fair
    -- game for any instance (its holder crashed or hung).
    claimed_by      text,
    claim_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Claims of due reminders and the backlog gauge.
CREATE INDEX reminders_due_idx ON reminders (fire_at) WHERE status = 'scheduled';
-- Claims of due webhook deliveries.
CREATE INDEX reminders_delivery_idx ON reminders (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
-- GET /v1/spaces/{id}/reminders, paged by (fire_at, reminder_id).
CREATE INDEX reminders_space_idx ON reminders (space_id, fire_at, reminder_id);
-- A task's reminders (cancellation when its state changes).
CREATE INDEX reminders_task_idx ON reminders (space_id, entity_type, entity_id);
-- Diagnostics: dead deliveries, newest first.
CREATE INDEX reminders_dead_idx ON reminders (updated_at) WHERE status = 'dead';

-- Every run of every background job (docs/scheduler.md, "Jobs").
CREATE TABLE job_runs (
    run_id      bigserial   PRIMARY KEY,
    job         text        NOT NULL,
    instance    text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    -- 'running' until the run ends (a row left 'running' names a run that crashed).
    outcome     text        NOT NULL CHECK (outcome IN
                    ('running', 'ok', 'failed', 'timeout', 'overlap-skipped')),
    error       text,
    items       integer     NOT NULL DEFAULT 0
);

CREATE INDEX job_runs_started_idx ON job_runs (started_at);
CREATE INDEX job_runs_job_idx ON job_runs (job, started_at);
