"""PostgreSQL storage: ``CHATD_DB=postgresql://...`` (schema, migrations, the threaded Database)."""
