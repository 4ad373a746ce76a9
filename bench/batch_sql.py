"""SQL statements per job on the scheduler's dispatch path: the figure a noisy machine cannot move.

    .venv/bin/python bench/batch_sql.py [N] [plain|clean|commit|fail …] [--repeats K]
    .bench-compare/<commit>/venv/bin/python -I bench/batch_sql.py   (another version's)

Drives ``batch/ops.py`` directly on a real SQLite store, as the scheduler does for one worker of
4 slots: submit N jobs (default 400; every other one after the job before it), then claim →
started → finished (→ journaled → committed) → resolve_done, one transaction per round, until
every job is done. Every statement a :class:`Tx` runs is counted (execute, one, all, and each
non-empty many or insert). Kinds: ``plain`` (non-isolated, exit 0), ``clean`` (isolated, nothing
changed), ``commit`` (isolated, committed), ``fail`` (non-isolated, fails once, then succeeds).
Also the CPU time of those transactions per job (process time, best of ``--repeats``, default
5): with SQLite in this process, the scheduler's database cost without its 9P and its workers.
Uses only what ops.py has had since the batch layer's retries (0a76ebc and later).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

from brasil.batch import ops
from brasil.batch.jobfile import JobSpec
from brasil.batch.policy import TrellisPolicy
from brasil.batch.store import Store, Tx

statements = 0


def counted(name: str, rows_arg: bool) -> None:
    orig = getattr(Tx, name)

    def run(self: Tx, first: Any, *args: Any, **kw: Any) -> Any:
        global statements
        if rows_arg:
            args = (list(args[0]), *args[1:])
            statements += bool(args[0])
        else:
            statements += 1
        return orig(self, first, *args, **kw)
    setattr(Tx, name, run)


for _name in ("execute", "one", "all"):
    counted(_name, False)
for _name in ("many", "insert"):
    counted(_name, True)


def per_job(kind: str, n: int) -> tuple[float, float]:
    """(statements, CPU seconds) per job."""
    global statements
    with tempfile.TemporaryDirectory(prefix="bench-sql-") as d:
        os.chmod(d, 0o700)
        store = Store(f"{d}/batch.db")
        store.open()
        try:
            tx = Tx(store, store._conn)
            specs = [JobSpec(cmd="true", line=i, home=d, isolate=kind in ("clean", "commit"),
                             redundancy=1, retries=1 if kind == "fail" else 0,
                             deps=[i - 1] if i % 2 else []) for i in range(n)]
            tx.execute("BEGIN IMMEDIATE")
            ops.submit(tx, specs, time.time())
            tx.execute("COMMIT")
            statements = 0
            cpu = time.process_time()
            failed: set[int] = set()
            while True:
                tx.execute("BEGIN IMMEDIATE")
                now = time.time()
                runs = [json.loads(line[4:]) for _, line in
                        ops.claim(tx, "w", 4, None, now, TrellisPolicy()) if line.startswith("run ")]
                if not runs:
                    tx.execute("COMMIT")
                    break
                ops.started(tx, "w", [(r["t"], 0, now) for r in runs])
                done: list[int] = []
                for r in runs:
                    if kind == "fail" and r["job"] not in failed:
                        failed.add(r["job"])
                        ops.finished(tx, "w", r["t"], 1, now, now, now, "")
                        continue
                    done += ops.finished(tx, "w", r["t"], 0, now, now, now, "",
                                         clean=kind == "clean")[1]
                    if kind == "commit":
                        ops.journaled(tx, "w", r["t"], now, now)
                        done += ops.committed(tx, "w", r["t"], now, now)[1]
                if done:
                    ops.resolve_done(tx, done)
                if kind == "fail":  # no backoff: the retry is ready at once
                    tx.execute("UPDATE jobs SET not_before = NULL")
                tx.execute("COMMIT")
            per, cpu = statements / n, (time.process_time() - cpu) / n
            ended = tx.all("SELECT state, count(*) FROM jobs GROUP BY state")
            if ended != [("done", n)]:
                raise SystemExit(f"{kind}: not every job is done: {ended}")
            return per, cpu
        finally:
            store.close()


def main() -> int:
    args = sys.argv[1:]
    repeats = 5
    if "--repeats" in args:
        i = args.index("--repeats")
        repeats = int(args[i + 1])
        del args[i:i + 2]
    n = int(args[0]) if args else 400
    for kind in args[1:] or ("plain", "clean", "commit", "fail"):
        runs = [per_job(kind, n) for _ in range(repeats)]
        print(f"{kind:7} {runs[0][0]:.2f} statements per job, "
              f"{min(r[1] for r in runs) * 1e6:.0f} us CPU per job (best of {repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
