#!/usr/bin/env bash
# Fleet benchmark: `pgdbm migrate apply --module tenant --schemas 'tenant_%' --jobs N` over
# 1,000 tenant schemas x 5 migration files, for N = 1, 4 and 8; prints schemas per second.
#
# Each run starts from a freshly created scratch database holding the 1,000 empty schemas
# tenant_0001 ... tenant_1000; the database is dropped at the end (also on failure).
#
#   crates/pgdbm-cli/bench/fleet.sh
#
# Environment: PGDBM_BENCH_SERVER (default postgresql://postgres@127.0.0.1:5432, a server
# where that user may create databases), SCHEMAS (default 1000), JOBS (default "1 4 8").
set -euo pipefail

SERVER="${PGDBM_BENCH_SERVER:-postgresql://postgres@127.0.0.1:5432}"
SCHEMAS="${SCHEMAS:-1000}"
JOBS="${JOBS:-1 4 8}"
DB="pgdbm_fleet_bench_$$"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
WORK="$(mktemp -d)"

psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$SERVER/postgres" "$@"; }

cleanup() {
    psql_admin -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "building the release binary ..." >&2
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p pgdbm-cli --bin pgdbm
BIN="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/pgdbm"

mkdir -p "$WORK/migrations"
cat >"$WORK/pgdbm.toml" <<TOML
[project]
default_env = "bench"
[environments.bench]
url = "$SERVER/$DB"
[modules.tenant]
migrations_path = "migrations"
TOML
cat >"$WORK/migrations/001_items.sql" <<'SQL'
CREATE TABLE {{tables.items}} (
    id serial PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
SQL
cat >"$WORK/migrations/002_items_name.sql" <<'SQL'
CREATE INDEX items_name_idx ON {{tables.items}} (name);
SQL
cat >"$WORK/migrations/003_items_price.sql" <<'SQL'
ALTER TABLE {{tables.items}} ADD COLUMN price numeric(10, 2) NOT NULL DEFAULT 0;
SQL
cat >"$WORK/migrations/004_seed.sql" <<'SQL'
INSERT INTO {{tables.items}} (name, price) VALUES ('first', 1.00), ('second', 2.50);
SQL
cat >"$WORK/migrations/005_cheap_items.sql" <<'SQL'
CREATE VIEW {{tables.cheap_items}} AS SELECT id, name FROM {{tables.items}} WHERE price < 2;
SQL

fresh_database() {
    psql_admin -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" -c "CREATE DATABASE \"$DB\""
    psql -X -q -v ON_ERROR_STOP=1 "$SERVER/$DB" -c "
        DO \$\$ BEGIN
            FOR i IN 1..$SCHEMAS LOOP
                EXECUTE format('CREATE SCHEMA %I', 'tenant_' || lpad(i::text, 4, '0'));
            END LOOP;
        END \$\$"
}

results=()
for n in $JOBS; do
    fresh_database
    echo "--jobs $n: migrating $SCHEMAS schemas ..." >&2
    start=$(date +%s.%N)
    (cd "$WORK" && "$BIN" migrate apply --module tenant --schemas 'tenant_%' --jobs "$n" \
        >"$WORK/jobs_$n.log" 2>&1) || { tail -20 "$WORK/jobs_$n.log" >&2; exit 1; }
    end=$(date +%s.%N)
    done_count=$(psql -X -q -t -A "$SERVER/$DB" -c \
        "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n
           ON n.oid = c.relnamespace WHERE c.relname = 'cheap_items' AND n.nspname LIKE 'tenant_%'")
    if [ "$done_count" != "$SCHEMAS" ]; then
        echo "--jobs $n: only $done_count of $SCHEMAS schemas got every migration" >&2
        exit 1
    fi
    results+=("$(awk -v n="$n" -v s="$start" -v e="$end" -v k="$SCHEMAS" \
        'BEGIN { printf "%6d %10.2f %12.1f", n, e - s, k / (e - s) }')")
done

echo
echo "$SCHEMAS schemas x 5 migrations ($(nproc) CPUs, server $SERVER)"
printf '%6s %10s %12s\n' jobs seconds schemas/s
printf '%s\n' "${results[@]}"
