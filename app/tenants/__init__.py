"""Users of one service: who a bearer token is (its name, role and limits), read from the tenants
file and the simple tokens; the file's format and the `python -m app tenants` command."""
