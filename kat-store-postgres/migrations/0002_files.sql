-- kat-store-postgres schema: files (see src/migrate.rs and src/files.rs).
--
-- File contents are stored in the database, content-addressed: one `file_contents` row per distinct
-- content (sha256), its bytes in ~1 MiB `file_chunks`, shared by every file with that content and
-- reference-counted. A content row whose sha256 is NULL is an upload in progress (only visible to
-- the uploading transaction).

CREATE TABLE file_contents (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL while its upload is in progress.
    sha256  text UNIQUE,
    size    bigint NOT NULL,
    -- How many chunks it has (seq 0 .. chunks-1).
    chunks  integer NOT NULL,
    -- How many `files` rows have this content.
    refs    bigint NOT NULL
);

CREATE TABLE file_chunks (
    content bigint NOT NULL REFERENCES file_contents (id) ON DELETE CASCADE,
    seq     integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (content, seq)
);
-- Contents are often compressed already, and compressing them costs CPU on every write.
ALTER TABLE file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE files (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org         text NOT NULL,
    file_type   text NOT NULL,
    name        text NOT NULL,
    size        bigint NOT NULL,
    sha256      text NOT NULL,
    content     bigint NOT NULL REFERENCES file_contents (id),
    task        uuid,
    -- Milliseconds since the epoch.
    created_at  bigint NOT NULL,
    scan_level  smallint,
    level_from  text NOT NULL
);
CREATE INDEX files_by_org ON files (org, id);
CREATE INDEX files_by_type ON files (org, file_type, id);
CREATE INDEX files_by_task ON files (org, task, id) WHERE task IS NOT NULL;
CREATE INDEX files_by_content ON files (content);
