"""Persistence of tasks and files: the TaskStore interface, SQLite for one host, PostgreSQL for several."""
