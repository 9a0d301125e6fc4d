"""Python pgdbm 0.5.0 contender for the pgdbm-bench harness.

Event loop: the stdlib asyncio default loop. pgdbm 0.5.0 does not depend on uvloop
(its only requirements are asyncpg and pydantic), so uvloop is deliberately not used.

README -- protocol
------------------
Environment: DATABASE_URL (postgresql://...) and BENCH_SCHEMA (schema holding the bench
tables, created and filled by the harness). Queries use pgdbm's {{tables.x}} templates,
which pgdbm resolves to "BENCH_SCHEMA".x.

Worker mode (`python worker.py`): one JSON command per stdin line, exactly one JSON reply
line per command on stdout (flushed).
  {"cmd":"open","conc":N}        pool of N (min = max = N), connect()  -> {"ok":true}
  {"cmd":"close"}                disconnect()                          -> {"ok":true}
  {"cmd":"run","workload":W,"conc":N,"budget":{"secs":S}}
      N tasks loop over W; each runs one op uncounted, then (start = when all have) an op is
      counted when it ends inside [start + S/10, start + S/10 + S); a task stops at the first
      op ending after the window.
      -> {"ok":true,"ops":counted,"secs":S,"all_ops":every op run,"rows":rows of task 0's last op}
  {"cmd":"run","workload":W,"conc":N,"budget":{"ops":K}}
      N tasks share exactly K ops; secs = wall time until the last task finishes.
      -> {"ok":true,"ops":K,"secs":elapsed,"all_ops":K,"rows":...}
  {"cmd":"bulk","workload":"executemany"|"copy","conc":N,"rows":R,"repeat":K}
      R rows built untimed, split into N contiguous parts; task i writes part i with one
      executemany / copy_records_to_table call.          -> {"ok":true,"secs":elapsed,"rows":R}
  {"cmd":"quit"} or EOF          close if open, reply {"ok":true} (not on EOF), exit 0.
  Any failure -> {"ok":false,"error":"<ExceptionType>: <message>"}; the worker keeps going.
Every op checks its row count and raises on a mismatch, so a broken run cannot look fast.

RSS mode (`python worker.py rss W`, W in fetch100k | typed100k | stream1m): pool of 1, one
warm SELECT 1, baseline = VmRSS, run W once, then print
{"ok":true,"baseline_kb":...,"peak_kb":VmHWM,"rows":...} and exit.
"""

import asyncio
import json
import logging
import os
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel

from pgdbm import AsyncDatabaseManager, DatabaseConfig

# pgdbm warns ("Creating another connection pool ...") on every connect() after the first
# in a process, and the harness opens a fresh pool per slice; stderr is the harness's own.
logging.getLogger("pgdbm").setLevel(logging.ERROR)

TABLE_ROWS = 100_000

SQL_POINT = "SELECT * FROM {{tables.bench_rows}} WHERE id = $1"
SQL_VALUE = "SELECT 1+1"
SQL_1K = "SELECT * FROM {{tables.bench_rows}} WHERE id <= 1000"
SQL_ALL = "SELECT * FROM {{tables.bench_rows}}"
SQL_TX_INSERT = "INSERT INTO {{tables.bench_history}} (account, delta) VALUES ($1, $2)"
SQL_TX_UPDATE = "UPDATE {{tables.bench_accounts}} SET balance = balance + $2 WHERE id = $1"
SQL_PG_TYPE = (
    "select typname, typnamespace, typowner, typlen, typbyval, typcategory, typispreferred, "
    "typisdefined, typdelim, typrelid, typelem, typarray from pg_type "
    "where typtypmod = $1 and typisdefined = $2"
)
SQL_SERIES = "SELECT i FROM generate_series(1, $1) AS i"
SQL_BYTEA = "SELECT * FROM {{tables.bench_bytes}}"
SQL_ARRAYS = "SELECT * FROM {{tables.bench_arrays}}"
SQL_MANY_INSERT = (
    "INSERT INTO {{tables.bench_many}} (id, qty, name, price, active, created, ref) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
BULK_COLUMNS = ["id", "qty", "name", "price", "active", "created", "ref"]
SQL_STREAM = (
    "SELECT g AS id, 'user ' || g AS name, 'user' || g || '@example.com' AS email, "
    "g * 0.5 AS score, g % 2 = 0 AS active, now() AS created "
    "FROM generate_series(1, 1000000) AS g"
)


class BenchRow(BaseModel):
    id: int
    name: str
    email: str
    score: float
    active: bool
    created: datetime


def expect(workload, got, want):
    if got != want:
        raise RuntimeError(f"{workload}: expected {want} row(s), got {got}")
    return got


# One operation per workload; each returns the number of rows it read.


async def op_point(db):
    row = await db.fetch_one(SQL_POINT, random.randint(1, TABLE_ROWS))
    return expect("point", 0 if row is None else 1, 1)


async def op_value(db):
    v = await db.fetch_value(SQL_VALUE)
    if v != 2:
        raise RuntimeError(f"value: SELECT 1+1 gave {v!r}")
    return 1


def fetch_op(name, sql, want, *args):
    async def op(db):
        return expect(name, len(await db.fetch_all(sql, *args)), want)

    return op


def typed_op(name, sql, want):
    async def op(db):
        return expect(name, len(await db.fetch_all_as_model(BenchRow, sql)), want)

    return op


async def op_txn(db):
    acct, delta = random.randint(1, TABLE_ROWS), random.randint(-100, 100)
    async with db.transaction() as tx:
        status = await tx.execute(SQL_TX_INSERT, acct, delta)
        if status != "INSERT 0 1":
            raise RuntimeError(f"txn: insert gave {status!r}")
        status = await tx.execute(SQL_TX_UPDATE, acct, delta)
        if status != "UPDATE 1":
            raise RuntimeError(f"txn: update gave {status!r}")
    return 0


async def op_pg_type(db):
    n = len(await db.fetch_all(SQL_PG_TYPE, -1, True))
    if n == 0:
        raise RuntimeError("pg_type: no rows")
    return n


OPS = {
    "point": op_point,
    "value": op_value,
    "fetch1k": fetch_op("fetch1k", SQL_1K, 1000),
    "fetch100k": fetch_op("fetch100k", SQL_ALL, TABLE_ROWS),
    "typed1k": typed_op("typed1k", SQL_1K, 1000),
    "typed100k": typed_op("typed100k", SQL_ALL, TABLE_ROWS),
    "txn": op_txn,
    "pg_type": op_pg_type,
    "series": fetch_op("series", SQL_SERIES, 1000, 1000),
    "bytea": fetch_op("bytea", SQL_BYTEA, 100),
    "arrays": fetch_op("arrays", SQL_ARRAYS, 10),
}


def make_manager(conc):
    config = DatabaseConfig(
        connection_string=os.environ["DATABASE_URL"],
        schema=os.environ["BENCH_SCHEMA"],
        min_connections=conc,
        max_connections=conc,
    )
    return AsyncDatabaseManager(config)


async def run_timed(db, op, conc, secs):
    # As the Rust side: every task runs one op uncounted (asyncpg introspects types on a new
    # connection's first use), then the window opens for all, a warm-in of secs/10 later.
    ready = asyncio.Barrier(conc)
    window = []

    async def task():
        counted = all_ops = 0
        rows = await op(db)
        all_ops += 1
        await ready.wait()
        if not window:
            start = time.monotonic() + secs / 10
            window.extend([start, start + secs])
        window_start, window_end = window
        while True:
            rows = await op(db)
            all_ops += 1
            now = time.monotonic()
            if now >= window_end:
                break
            if now >= window_start:
                counted += 1
        return counted, all_ops, rows

    results = await asyncio.gather(*(task() for _ in range(conc)))
    return {
        "ops": sum(r[0] for r in results),
        "secs": secs,
        "all_ops": sum(r[1] for r in results),
        "rows": results[0][2],
    }


async def run_ops(db, op, conc, total):
    left = total  # single-threaded loop: taking one is atomic between awaits

    async def task():
        nonlocal left
        rows = None
        while left > 0:
            left -= 1
            rows = await op(db)
        return rows

    start = time.monotonic()
    results = await asyncio.gather(*(task() for _ in range(conc)))
    elapsed = time.monotonic() - start
    # Task 0's last op; with K < N task 0 may have run none, so fall back to one that did.
    rows = next((r for r in results if r is not None), 0)
    return {"ops": total, "secs": elapsed, "all_ops": total, "rows": rows}


def bulk_rows(n):
    epoch = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return [
        (i + 1, i % 1000, f"item {i}", i * 0.25, i % 2 == 0,
         epoch + timedelta(seconds=i), uuid.UUID(int=i + 1))
        for i in range(n)
    ]


def split(rows, parts):
    base, extra = divmod(len(rows), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append(rows[start:end])
        start = end
    return out


async def run_bulk(db, workload, conc, total, repeat):
    parts = split(bulk_rows(total), conc)

    if workload == "executemany":
        async def task(part):
            await db.executemany(SQL_MANY_INSERT, part)  # returns None: checked below
            return len(part)
    elif workload == "copy":
        async def task(part):
            # pgdbm 0.5 wants the bare table name and adds schema_name=<manager schema>.
            written = await db.copy_records_to_table("bench_copy", part, columns=BULK_COLUMNS)
            return expect("copy", written, len(part))
    else:
        raise ValueError(f"unknown bulk workload {workload!r}")

    start = time.monotonic()
    for _ in range(repeat):
        await asyncio.gather(*(task(p) for p in parts))
    elapsed = time.monotonic() - start

    if workload == "executemany":
        # Untimed: executemany reports nothing, so count what landed (tables start empty).
        n = await db.fetch_value("SELECT count(*) FROM {{tables.bench_many}}")
        expect("executemany", n, total * repeat)
    return {"secs": elapsed, "rows": total * repeat}


class Worker:
    def __init__(self):
        self.db = None

    async def handle(self, msg):
        cmd = msg["cmd"]
        if cmd == "open":
            if self.db is not None:
                raise RuntimeError("already open")
            db = make_manager(int(msg["conc"]))
            await db.connect()
            self.db = db
            return {}
        if cmd == "close":
            await self.close()
            return {}
        if cmd == "run":
            op = OPS.get(msg["workload"])
            if op is None:
                raise ValueError(f"unknown workload {msg['workload']!r}")
            budget, conc = msg["budget"], int(msg["conc"])
            if "secs" in budget:
                return await run_timed(self.open_db(), op, conc, float(budget["secs"]))
            return await run_ops(self.open_db(), op, conc, int(budget["ops"]))
        if cmd == "bulk":
            return await run_bulk(
                self.open_db(), msg["workload"], int(msg["conc"]), int(msg["rows"]),
                int(msg.get("repeat", 1)),
            )
        raise ValueError(f"unknown command {cmd!r}")

    def open_db(self):
        if self.db is None:
            raise RuntimeError("not open")
        return self.db

    async def close(self):
        if self.db is not None:
            db, self.db = self.db, None
            await db.disconnect()


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve():
    worker = Worker()
    while True:
        # Blocking read is fine: nothing else runs on the loop between commands.
        line = sys.stdin.readline()
        if not line:
            await worker.close()
            return
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            if msg.get("cmd") == "quit":
                await worker.close()
                reply({"ok": True})
                return
            reply({"ok": True, **await worker.handle(msg)})
        except Exception as e:
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


def proc_status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


async def rss(workload):
    db = make_manager(1)
    await db.connect()
    try:
        await db.fetch_value("SELECT 1")
        baseline = proc_status_kb("VmRSS")
        held = None  # the 100k results stay alive until VmHWM has been read
        if workload == "fetch100k":
            held = await db.fetch_all(SQL_ALL)
            rows = expect(workload, len(held), TABLE_ROWS)
        elif workload == "typed100k":
            held = await db.fetch_all_as_model(BenchRow, SQL_ALL)
            rows = expect(workload, len(held), TABLE_ROWS)
        elif workload == "stream1m":
            rows = 0
            # pgdbm has no streaming API of its own: acquire() hands out the asyncpg connection.
            async with db.acquire() as conn:
                async with conn.transaction():
                    async for _ in conn.cursor(SQL_STREAM, prefetch=1000):
                        rows += 1
            expect(workload, rows, 1_000_000)
        else:
            raise ValueError(f"unknown rss workload {workload!r}")
        peak = proc_status_kb("VmHWM")
        del held
    finally:
        await db.disconnect()
    reply({"ok": True, "baseline_kb": baseline, "peak_kb": peak, "rows": rows})


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "rss":
        try:
            asyncio.run(rss(sys.argv[2]))
        except Exception as e:
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})
            sys.exit(1)
        return
    if len(sys.argv) != 1:
        sys.exit("usage: worker.py | worker.py rss fetch100k|typed100k|stream1m")
    asyncio.run(serve())


if __name__ == "__main__":
    main()
