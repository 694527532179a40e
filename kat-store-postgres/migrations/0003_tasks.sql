-- kat-store-postgres schema: tasks, schedules, object sets, organizations, the plugin catalogue,
-- revoked tokens and rules' state (see src/migrate.rs and src/tasks.rs).
--
-- Records are kat-core's types as JSON (`record`), with the columns the store filters and orders on
-- beside them. Tasks use `json`, not `jsonb`: a task's stderr tail may hold NUL characters, which
-- `jsonb` refuses. Times are milliseconds since the epoch (kat-core's `Timestamp`).

CREATE TABLE tasks (
    id          uuid PRIMARY KEY,
    org         text NOT NULL,
    state       text NOT NULL,
    plugin_id   text NOT NULL,
    schedule    uuid,
    created_at  bigint NOT NULL,
    -- The lease of a running task (Task::lease): who holds it, until when.
    lease_worker text,
    lease_until  bigint,
    record      json NOT NULL
);
CREATE INDEX tasks_newest ON tasks (created_at DESC, id DESC);
-- What claim_tasks reads: the queued tasks, oldest first.
CREATE INDEX tasks_queued ON tasks (created_at, id) WHERE state = 'queued';
-- recover_expired reads the running tasks through tasks_by_state: its cost is the number of
-- running tasks (at most what the workers run), not of all tasks.
CREATE INDEX tasks_by_org ON tasks (org, created_at DESC, id DESC);
CREATE INDEX tasks_by_state ON tasks (state, created_at DESC, id DESC);
CREATE INDEX tasks_by_schedule ON tasks (schedule, created_at DESC, id DESC) WHERE schedule IS NOT NULL;

-- When a schedule last claimed each target (TaskQueue::claim_targets).
CREATE TABLE schedule_claims (
    schedule    uuid NOT NULL,
    key         text NOT NULL,
    claimed_at  bigint NOT NULL,
    PRIMARY KEY (schedule, key)
);

-- The last integer id given to a schedule ('schedule') or an object set ('object_set'): a row per
-- kind, updated under its row lock in the transaction that stores the record, so that numbers are
-- unique, increasing and never reused (also when a record comes with a number of its own).
CREATE TABLE kat_counters (
    name text PRIMARY KEY,
    last bigint NOT NULL
);
INSERT INTO kat_counters (name, last) VALUES ('schedule', 0), ('object_set', 0);

CREATE TABLE schedules (
    id           uuid PRIMARY KEY,
    number       bigint NOT NULL UNIQUE,
    org          text,
    enabled      boolean NOT NULL,
    next_run_at  bigint NOT NULL,
    record       jsonb NOT NULL
);
-- What due_schedules reads: only enabled schedules, by due time.
CREATE INDEX schedules_due ON schedules (next_run_at, id) WHERE enabled;
CREATE INDEX schedules_by_org ON schedules (org, id);

CREATE TABLE object_sets (
    id      uuid PRIMARY KEY,
    number  bigint NOT NULL UNIQUE,
    org     text NOT NULL,
    record  jsonb NOT NULL
);
CREATE INDEX object_sets_by_org ON object_sets (org, id);

CREATE TABLE organizations (
    code    text PRIMARY KEY,
    record  jsonb NOT NULL
);

CREATE TABLE plugins (
    plugin_id  text PRIMARY KEY,
    record     jsonb NOT NULL
);

CREATE TABLE plugin_overrides (
    org        text NOT NULL,
    plugin_id  text NOT NULL,
    enabled    boolean NOT NULL,
    PRIMARY KEY (org, plugin_id)
);

CREATE TABLE revoked_tokens (
    jti  text PRIMARY KEY,
    -- Unix seconds.
    exp  bigint NOT NULL
);
CREATE INDEX revoked_tokens_by_exp ON revoked_tokens (exp);

-- The replicas' heartbeats (ReplicaRegistry).
CREATE TABLE replicas (
    id         text PRIMARY KEY,
    last_seen  bigint NOT NULL,
    record     jsonb NOT NULL
);

CREATE TABLE rule_overrides (
    org      text NOT NULL,
    rule     text NOT NULL,
    enabled  boolean NOT NULL,
    PRIMARY KEY (org, rule)
);

-- Objects a completed task of a plugin had as targets (RuleCatalog::mark_processed).
CREATE TABLE processed_objects (
    org          text NOT NULL,
    plugin_id    text NOT NULL,
    object_type  text NOT NULL,
    key          text NOT NULL,
    PRIMARY KEY (org, plugin_id, object_type, key)
);
