-- Write marks (ScheduleStore::mark_written / written_marks): one row per organization whose objects
-- were written through an API, its mark a fresh number from the sequence at every write, so that the
-- schedulers of every replica see that an organization was written, whichever replica wrote it.
CREATE SEQUENCE kat_written_seq;
CREATE TABLE kat_written (
    org  text COLLATE "C" PRIMARY KEY,
    mark bigint NOT NULL
);
