"""Running a table: the engine (rows -> clips -> results -> rows), runners (worker processes, Ray),
results stores (folder, PostgreSQL), source fingerprints, progress."""
