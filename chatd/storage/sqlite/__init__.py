"""SQLite: the schema and its migrations, the writer and reader threads, the file's lock."""
