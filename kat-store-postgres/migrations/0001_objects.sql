-- kat-store-postgres schema: objects (see src/migrate.rs and src/objects.rs).
--
-- Text that is ordered or compared byte by byte is COLLATE "C": natural keys then sort in the same
-- order as Rust's `String` (UTF-8 byte order), whatever the database's locale.

-- One row per object. `body` holds the object and its dates and attribution (not its level: the
-- columns below are authoritative for that). `fields` holds, for every field of the type
-- (ObjectType::fields), its filter text (FieldValue::filter_text), for equality filters.
CREATE TABLE kat_objects (
    org        text COLLATE "C" NOT NULL,
    ty         text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    body       jsonb NOT NULL,
    fields     jsonb NOT NULL,
    -- The effective scan level (NULL: none); `declared` is NULL for types without scan levels.
    scan_level smallint,
    declared   boolean,
    -- For an inherited level, the object it comes from.
    inh_ty     text COLLATE "C",
    inh_key    text COLLATE "C",
    PRIMARY KEY (org, ty, key)
);
CREATE INDEX kat_objects_fields ON kat_objects USING gin (fields jsonb_path_ops);

-- The level relations of DNS records (kat_core::levels::relations), one row per edge and record
-- that creates it (parallel edges of two records stay apart, as in the other stores).
CREATE TABLE kat_edges (
    org     text COLLATE "C" NOT NULL,
    rec_ty  text COLLATE "C" NOT NULL,
    rec_key text COLLATE "C" NOT NULL,
    src_ty  text COLLATE "C" NOT NULL,
    src_key text COLLATE "C" NOT NULL,
    dst_ty  text COLLATE "C" NOT NULL,
    dst_key text COLLATE "C" NOT NULL,
    cap     smallint,
    PRIMARY KEY (org, rec_ty, rec_key, src_ty, src_key, dst_ty, dst_key)
);
CREATE INDEX kat_edges_out ON kat_edges (org, src_ty, src_key);
CREATE INDEX kat_edges_in ON kat_edges (org, dst_ty, dst_key);

-- Which tasks wrote which objects; `seq` gives first-seen order.
CREATE TABLE kat_attribution (
    org  text COLLATE "C" NOT NULL,
    ty   text COLLATE "C" NOT NULL,
    key  text COLLATE "C" NOT NULL,
    task uuid NOT NULL,
    seq  bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (org, ty, key, task)
);
CREATE INDEX kat_attribution_task ON kat_attribution (org, task);
