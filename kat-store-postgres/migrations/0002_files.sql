-- kat-store-postgres schema: files (see src/migrate.rs).
SELECT 1;
