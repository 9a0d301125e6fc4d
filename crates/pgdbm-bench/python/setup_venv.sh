#!/usr/bin/env bash
# Usage: setup_venv.sh DIR
# Ensures DIR is a Python venv with pgdbm==0.5.0 (plus its deps asyncpg, pydantic).
# Quick no-op when DIR/bin/python already imports pgdbm 0.5.0.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir="$1"
want="0.5.0"

has_pgdbm() {
    [[ -x "$dir/bin/python" ]] || return 1
    "$dir/bin/python" - "$want" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
import pgdbm  # noqa: F401  (must actually import, not just be listed)
sys.exit(0 if version("pgdbm") == sys.argv[1] else 1)
PY
}

if has_pgdbm; then
    exit 0
fi

if [[ ! -x "$dir/bin/python" ]]; then
    "${PYTHON:-python3}" -m venv "$dir"
fi
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check "pgdbm==$want"

has_pgdbm || { echo "setup_venv.sh: pgdbm $want still not importable in $dir" >&2; exit 1; }
