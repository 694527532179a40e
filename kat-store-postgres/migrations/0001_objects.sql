-- kat-store-postgres schema: objects (see src/migrate.rs).
SELECT 1;
