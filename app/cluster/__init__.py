"""Several hosts, one API: what exists only when hosts share a PostgreSQL database."""
