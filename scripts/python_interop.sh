#!/usr/bin/env bash
# Interop check between pgdbm for Rust and the real Python pgdbm 0.5.0 (from PyPI).
#
#   1. Creates a Python venv in a temp dir and installs pgdbm==0.5.0.
#   2. Python applies a migrations directory (templates, CRLF and CR line endings, a
#      no-transaction file) into schema "interop" of a fresh database; pgdbm-rs must then report
#      every file applied with identical checksums, none pending, and apply nothing.
#   3. The reverse on another fresh database: pgdbm-rs applies, Python's
#      get_pending_migrations() must be empty and Python must apply nothing.
#   4. Both tracking tables must have the same definition, and both implementations must compute
#      the same checksums for awkward files (CRLF, lone CR, BOM, Unicode whitespace).
#
# Usage: scripts/python_interop.sh      (DATABASE_URL overrides the local server; it needs a
# role that may CREATE DATABASE. Set PGDBM_MIGRATE_BIN to use a prebuilt `migrate` example.)
# Exit status 0 means every check passed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
URL=${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgdbm_interop.XXXXXX")
DB_A="pgdbm_interop_a_$$"
DB_B="pgdbm_interop_b_$$"
SCHEMA=interop

log() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

cleanup() {
    psql "$URL" -qX -c "DROP DATABASE IF EXISTS \"$DB_A\" WITH (FORCE)" >/dev/null 2>&1 || true
    psql "$URL" -qX -c "DROP DATABASE IF EXISTS \"$DB_B\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The URL of another database on the same server (keeps user, host and query parameters).
db_url() {
    local base=${URL%%\?*}
    local query=${URL#"$base"}
    printf '%s/%s%s' "${base%/*}" "$1" "$query"
}

log "Python venv with pgdbm==0.5.0"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check pgdbm==0.5.0
PY="$WORK/venv/bin/python"
"$PY" -c 'import importlib.metadata as m; print("python pgdbm", m.version("pgdbm"), "asyncpg", m.version("asyncpg"))'

log "Rust migrate example"
if [[ -z "${PGDBM_MIGRATE_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --quiet -p pgdbm --example migrate)
    PGDBM_MIGRATE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/migrate"
fi
[[ -x "$PGDBM_MIGRATE_BIN" ]] || fail "no migrate binary at $PGDBM_MIGRATE_BIN"
rs() { "$PGDBM_MIGRATE_BIN" "$@"; }

# Python side: the same commands and output format as the Rust example.
cat >"$WORK/py_migrate.py" <<'PYEOF'
import asyncio
import sys

from pgdbm import AsyncDatabaseManager, DatabaseConfig
from pgdbm.migrations import AsyncMigrationManager


async def main() -> None:
    cmd, url, schema, directory = sys.argv[1:5]
    db = AsyncDatabaseManager(
        DatabaseConfig(connection_string=url, schema=schema, min_connections=1, max_connections=2)
    )
    mm = AsyncMigrationManager(db, migrations_path=directory)
    if cmd == "checksums":
        for m in await mm.find_migration_files():
            print("checksum", m.filename, m.checksum)
        return
    await db.connect()
    try:
        if cmd == "apply":
            result = await mm.apply_pending_migrations()
            for a in result["applied"]:
                print("applied", a["filename"])
            print("status", result["status"])
        elif cmd == "status":
            for name, m in (await mm.get_applied_migrations()).items():
                print("applied", name, m.checksum, m.module_name)
            for m in await mm.get_pending_migrations():
                print("pending", m.filename, m.checksum)
        else:
            raise SystemExit(f"unknown command {cmd}")
    finally:
        await db.disconnect()


asyncio.run(main())
PYEOF
py() { "$PY" "$WORK/py_migrate.py" "$@"; }

log "Migrations directory"
MIG="$WORK/migrations"
mkdir -p "$MIG"
cp "$ROOT"/scripts/interop/migrations/*.sql "$MIG/"
# Line endings that must not change checksums between the two implementations.
printf -- '-- Windows line endings\r\nALTER TABLE {{tables.users}}\r\n    ADD COLUMN name TEXT;\r\n' >"$MIG/004_crlf.sql"
printf -- '-- Classic Mac line endings\rALTER TABLE {{tables.posts}}\r    ADD COLUMN title TEXT;\r' >"$MIG/005_cr.sql"
ls "$MIG"
FILES=$(ls "$MIG" | wc -l)

psql "$URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$DB_A\"" -c "CREATE DATABASE \"$DB_B\""
URL_A=$(db_url "$DB_A")
URL_B=$(db_url "$DB_B")

log "Direction 1: Python applies, pgdbm-rs reads"
py apply "$URL_A" "$SCHEMA" "$MIG" | tee "$WORK/py_apply_a.txt"
grep -q '^status success$' "$WORK/py_apply_a.txt" || fail "Python did not apply the migrations"
[[ $(grep -c '^applied ' "$WORK/py_apply_a.txt") -eq $FILES ]] || fail "Python applied fewer than $FILES files"
DATABASE_URL=$URL_A rs status --dir "$MIG" --schema "$SCHEMA" | sort >"$WORK/rs_status_a.txt"
py status "$URL_A" "$SCHEMA" "$MIG" | sort >"$WORK/py_status_a.txt"
cat "$WORK/rs_status_a.txt"
grep -q '^pending' "$WORK/rs_status_a.txt" && fail "pgdbm-rs reports pending files after Python applied them"
[[ $(grep -c '^applied ' "$WORK/rs_status_a.txt") -eq $FILES ]] || fail "pgdbm-rs does not see all $FILES files applied"
diff -u "$WORK/py_status_a.txt" "$WORK/rs_status_a.txt" || fail "Python and pgdbm-rs disagree on database A"
# Checksums pgdbm-rs computes from the files equal those Python recorded.
DATABASE_URL=$URL_A rs checksums --dir "$MIG" | awk '{print $2, $3}' | sort >"$WORK/rs_files_a.txt"
psql "$URL_A" -qXAt -F ' ' -c "SELECT filename, checksum FROM $SCHEMA.schema_migrations ORDER BY filename" | sort >"$WORK/py_rows_a.txt"
diff -u "$WORK/py_rows_a.txt" "$WORK/rs_files_a.txt" || fail "checksums differ from the ones Python recorded"
DATABASE_URL=$URL_A rs apply --dir "$MIG" --schema "$SCHEMA" | tee "$WORK/rs_apply_a.txt"
grep -q '^applied ' "$WORK/rs_apply_a.txt" && fail "pgdbm-rs re-applied files Python had applied"
grep -q "^total $FILES\$" "$WORK/rs_apply_a.txt" || fail "pgdbm-rs total is not $FILES"
echo "OK: pgdbm-rs sees all $FILES files applied by Python, same checksums, none pending"

log "Direction 2: pgdbm-rs applies, Python reads"
DATABASE_URL=$URL_B rs apply --dir "$MIG" --schema "$SCHEMA" | tee "$WORK/rs_apply_b.txt"
[[ $(grep -c '^applied ' "$WORK/rs_apply_b.txt") -eq $FILES ]] || fail "pgdbm-rs applied fewer than $FILES files"
py status "$URL_B" "$SCHEMA" "$MIG" | sort >"$WORK/py_status_b.txt"
DATABASE_URL=$URL_B rs status --dir "$MIG" --schema "$SCHEMA" | sort >"$WORK/rs_status_b.txt"
cat "$WORK/py_status_b.txt"
grep -q '^pending' "$WORK/py_status_b.txt" && fail "Python's get_pending_migrations() is not empty"
diff -u "$WORK/rs_status_b.txt" "$WORK/py_status_b.txt" || fail "Python and pgdbm-rs disagree on database B"
py apply "$URL_B" "$SCHEMA" "$MIG" | tee "$WORK/py_apply_b.txt"
grep -q '^applied ' "$WORK/py_apply_b.txt" && fail "Python re-applied files pgdbm-rs had applied"
grep -q '^status up_to_date$' "$WORK/py_apply_b.txt" || fail "Python does not report up_to_date"
echo "OK: Python's get_pending_migrations() is empty after pgdbm-rs applied all $FILES files"

log "Same schema objects and tracking table definition on both sides"
describe() {
    psql "$1" -qXAt -c "
        SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || coalesce('(' || character_maximum_length || ')', '')
               || ' nullable=' || is_nullable || ' default=' || coalesce(replace(column_default, '$SCHEMA.', ''), '-')
        FROM information_schema.columns WHERE table_schema = '$SCHEMA'
        UNION ALL
        SELECT 'index ' || indexname || ' ' || regexp_replace(indexdef, '^.* USING ', '')
        FROM pg_indexes WHERE schemaname = '$SCHEMA'
        UNION ALL
        SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = '$SCHEMA'::regnamespace
        UNION ALL
        SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = '$SCHEMA'::regnamespace
        UNION ALL
        SELECT 'rows users ' || count(*) FROM $SCHEMA.users
        ORDER BY 1"
}
describe "$URL_A" >"$WORK/describe_a.txt"
describe "$URL_B" >"$WORK/describe_b.txt"
diff -u "$WORK/describe_a.txt" "$WORK/describe_b.txt" || fail "the databases differ"
grep 'schema_migrations' "$WORK/describe_a.txt"
echo "OK: identical tables, indexes, constraints and functions"

log "Checksums of awkward files"
ODD="$WORK/odd"
mkdir -p "$ODD"
printf 'SELECT 1;\r\nSELECT 2;\r\n' >"$ODD/001_crlf.sql"
printf 'SELECT 1;\rSELECT 2;\r' >"$ODD/002_cr.sql"
printf '\xef\xbb\xbfSELECT 1;\n' >"$ODD/003_bom.sql"
printf '\xef\xbb\xbf  SELECT 1;  \n' >"$ODD/004_bom_space.sql"
printf ' \t\n\xc2\xa0SELECT 1;\xe3\x80\x80\xe2\x80\xa8\n\n' >"$ODD/005_unicode_space.sql"
printf '\x1c\x1dSELECT 1;\x1e\x1f\x0b\x0c' >"$ODD/006_separators.sql"
printf 'SELECT 1;\r\r\n\n\rSELECT 2;' >"$ODD/007_mixed.sql"
printf 'SELECT '"'"'caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80'"'"';\n' >"$ODD/008_utf8.sql"
printf '\xe2\x80\x8bSELECT 1;\xe2\x80\x8b' >"$ODD/009_zero_width.sql"
py checksums "$URL" "$SCHEMA" "$ODD" | sort >"$WORK/py_odd.txt"
rs checksums --dir "$ODD" | sort >"$WORK/rs_odd.txt"
cat "$WORK/rs_odd.txt"
diff -u "$WORK/py_odd.txt" "$WORK/rs_odd.txt" || fail "checksums of awkward files differ"
echo "OK: $(wc -l <"$WORK/rs_odd.txt") awkward files, identical checksums"

log "ALL INTEROP CHECKS PASSED"
