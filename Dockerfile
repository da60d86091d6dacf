# The operator image the Helm chart runs. Not built by the tests (they run the
# binary directly); build with `docker build -t <registry>/reprise:<version> .`
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

# Database backups and restores run pg_dump and pg_restore, which must be at
# least as new as the servers they read: take them from the PostgreSQL
# project's Debian repository (PG_CLIENT major version, default 17). WAL
# archiving runs pg_receivewal and pg_basebackup (same package); a
# point-in-time restore replays the WAL in a private server, which must be of
# the instance's major version: the server package of that version is
# installed too (no cluster is created; the server never runs as root).
FROM debian:bookworm-slim
ARG PG_CLIENT=17
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc | gpg --dearmor -o /usr/share/keyrings/pgdg.gpg \
 && echo "deb [signed-by=/usr/share/keyrings/pgdg.gpg] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && mkdir -p /etc/postgresql-common/createcluster.d \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/reprise.conf \
 && apt-get install -y --no-install-recommends postgresql-client-${PG_CLIENT} postgresql-${PG_CLIENT} \
 && apt-get purge -y curl gnupg && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
ENV REPRISE_POSTGRES_BIN_DIR=/usr/lib/postgresql/${PG_CLIENT}/bin
COPY --from=build /src/target/release/reprise /reprise
USER 65532:65532
ENTRYPOINT ["/reprise"]
