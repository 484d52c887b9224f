#!/usr/bin/env bash
# Regenerates cloud-api/.sqlx/: the query descriptions that let `sqlx::query!` check cloud-api's
# SQL at build time without a database. Run it after changing a query of the store or a
# migration, and commit what changed under cloud-api/.sqlx/ (the test `sqlx_offline` in
# cloud-api fails while that data is stale).
#
# Needs no sqlx-cli: it starts a throwaway PostgreSQL (or uses a fresh database on the server
# DATABASE_URL names, which must allow CREATE DATABASE), applies migrations/ to it, and
# compiles cloud-api against it with SQLX_OFFLINE_DIR set, which makes the sqlx macros write a
# query-<sha256 of the SQL>.json per query there.
#
# The migrations are applied with psql (cloud-api itself cannot build until this data is
# current), each in one transaction as `cloud-api migrate` does, and `_sqlx_migrations` is
# created as sqlx creates it (`serve` reads it).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/cloud-api/.sqlx

say() { echo "sqlx-prepare: $*" >&2; }

line=$(bash scripts/ensure-postgres.sh)
BINDIR=${line##* at }
[ -x "$BINDIR/initdb" ] || { say "no initdb in $BINDIR (from: $line)"; exit 1; }

WORK=""
RUN_AS=()
cleanup() {
    if [ -n "$WORK" ]; then
        if [ -f "$WORK/data/postmaster.pid" ]; then
            "${RUN_AS[@]}" "$BINDIR/pg_ctl" stop -m immediate -w -D "$WORK/data" >/dev/null 2>&1 || true
        fi
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

if [ -n "${DATABASE_URL:-}" ]; then
    ADMIN_URL=$DATABASE_URL
    say "using the server DATABASE_URL names"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/sqlx-prepare.XXXXXX")
    chmod 755 "$WORK"
    if [ "$(id -u)" -eq 0 ]; then
        # PostgreSQL refuses to run as root.
        chown postgres "$WORK"
        RUN_AS=(runuser -u postgres --)
    fi
    "${RUN_AS[@]}" "$BINDIR/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 >/dev/null
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${RUN_AS[@]}" "$BINDIR/pg_ctl" start -w -D "$WORK/data" -l "$WORK/log" \
        -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" >/dev/null
    ADMIN_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
    say "throwaway PostgreSQL on port $PORT"
fi

DB="sqlx_prepare_$$_$(date +%s)"
psql -q -v ON_ERROR_STOP=1 "$ADMIN_URL" -c "CREATE DATABASE \"$DB\"" >/dev/null
# The admin URL with its database replaced.
DB_URL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$ADMIN_URL" "$DB")
drop_db() { psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$DB\"" >/dev/null 2>&1 || true; }
if [ -n "${DATABASE_URL:-}" ]; then trap 'drop_db; cleanup' EXIT; fi

psql -q -v ON_ERROR_STOP=1 "$DB_URL" >/dev/null <<'SQL'
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
);
SQL
for f in migrations/*.sql; do
    psql -q -v ON_ERROR_STOP=1 --single-transaction -f "$f" "$DB_URL" >/dev/null
done
say "migrations applied to $DB"

mkdir -p "$OUT"
rm -f "$OUT"/query-*.json
# Cargo does not know the macros read the database: make it expand them again.
touch cloud-api/src/store.rs cloud-api/src/store/*.rs
SQLX_OFFLINE=false DATABASE_URL=$DB_URL SQLX_OFFLINE_DIR=$OUT \
    cargo check -p cloud-api --lib --quiet
say "wrote $(ls "$OUT"/query-*.json | wc -l) query files to ${OUT#"$ROOT"/}"
