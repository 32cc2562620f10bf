# A stand-in for the official `postgres:15` image, built from the local Debian 12 base where no
# registry is reachable (app/tests/test_container.py builds it for the compose `cluster` profile).
# Debian's PostgreSQL 15, with the official image's interface: POSTGRES_USER (a superuser, default
# postgres), POSTGRES_PASSWORD (required on first start), POSTGRES_DB (default: the user), data in
# PGDATA=/var/lib/postgresql/data, a fresh database initialised on the first start, `pg_isready` on
# PATH, SIGINT to stop. Nothing else of the official image (initdb.d scripts, other variables).
ARG BASE_IMAGE=debian:12-slim
FROM ${BASE_IMAGE}
# Fixed ids (the base may hold 999 already); no cluster from the package: the entrypoint makes one in PGDATA.
RUN groupadd --system --gid 5432 postgres \
    && useradd --system --no-log-init --uid 5432 --gid postgres --home-dir /var/lib/postgresql \
       --no-create-home --shell /bin/sh postgres \
    && mkdir -p /etc/postgresql-common \
    && echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin \
    PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
USER 5432:5432
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "/usr/local/bin/postgres-entrypoint.sh"]
CMD ["postgres"]
