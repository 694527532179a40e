-- kat-store-postgres schema: tasks (see src/migrate.rs).
SELECT 1;
