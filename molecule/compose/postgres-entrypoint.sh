#!/bin/sh
# The official postgres image's first-start initialisation, reduced to what compose.yaml uses
# (see postgres.Dockerfile): a database cluster in PGDATA whose superuser POSTGRES_USER has the
# password POSTGRES_PASSWORD (scram-sha-256 from any address), and the database POSTGRES_DB.
set -eu
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "Database is uninitialized and superuser password is not specified (POSTGRES_PASSWORD)" >&2
    exit 1
  fi
  password_file=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
  initdb --username="$user" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 >/dev/null
  rm -f "$password_file"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  # Only the local socket while it is set up, so no client sees a half-made database.
  pg_ctl --pgdata="$PGDATA" --wait --silent --options="-c listen_addresses=''" start
  if [ "$database" != postgres ]; then
    createdb --username="$user" "$database"
  fi
  pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
  echo "initialised $PGDATA: user $user, database $database"
fi
if [ "$1" = postgres ]; then
  shift
  exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
