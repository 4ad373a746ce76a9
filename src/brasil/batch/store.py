"""The scheduler's database: one small interface, two engines (SQLite by default, PostgreSQL).

Every state the scheduler keeps is here, so a restarted scheduler resumes from it: jobs, their
dependencies, executions (an execution's id is its fencing token) and every event with its time.
Work is done on one database thread, in batches: the event loop queues operations (plain
functions of a :class:`Tx`), the thread runs all that are queued in ONE transaction and commits,
then hands each result back (group commit). So a thousand job reports cost one commit, not a
thousand, and the loop never waits on the disk. SQLite transactions begin IMMEDIATE, taking the
write lock up front (no deadlock between two writers upgrading); claims on PostgreSQL select
``FOR UPDATE SKIP LOCKED``, so two schedulers sharing a database never claim the same job, and
an operation that finds a row it read moved by another scheduler meanwhile
(``lifecycle.Moved``) is run again, alone.
Reads (listings, events) use a second connection on a second thread: in WAL mode they never wait
for writers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from ..ninep.private import UnsafePathError, check_ancestors, check_closed_dir, open_checked
from ..ninep.ratelimit import RateLimited
from .lifecycle import Moved

log = logging.getLogger("brasil.batch.store")
limited = RateLimited(log)  # a client that found a failing operation cannot flood the log
T = TypeVar("T")
MOVED_ATTEMPTS = 3  # runs of an operation whose rows other schedulers keep moving under it

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS counters (k TEXT PRIMARY KEY, v BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS jobs (
        id BIGINT PRIMARY KEY, name TEXT, tag TEXT NOT NULL, cmd TEXT NOT NULL,
        home TEXT NOT NULL, env TEXT NOT NULL, isolate INTEGER NOT NULL, priority INTEGER NOT NULL,
        retries INTEGER NOT NULL, redundancy INTEGER NOT NULL, state TEXT NOT NULL,
        deps_left INTEGER NOT NULL, active INTEGER NOT NULL, submitted DOUBLE PRECISION NOT NULL,
        finished DOUBLE PRECISION, exit_status INTEGER, winner BIGINT, reason TEXT)""",
    "CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (priority DESC, id) WHERE state = 'ready'",
    "CREATE INDEX IF NOT EXISTS jobs_running ON jobs (priority DESC, id) WHERE state = 'running'",
    "CREATE INDEX IF NOT EXISTS jobs_tag ON jobs (tag)",
    # the running isolated jobs, which a redundant execution is chosen from (policy.py) at
    # every claim that finds fewer ready jobs than free slots: not every running job
    "CREATE INDEX IF NOT EXISTS jobs_redundant ON jobs (priority DESC, id) "
    "WHERE state = 'running' AND isolate = 1",
    "CREATE TABLE IF NOT EXISTS deps (job BIGINT NOT NULL, dep BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS deps_dep ON deps (dep)",
    """CREATE TABLE IF NOT EXISTS executions (
        id BIGINT PRIMARY KEY, job BIGINT NOT NULL, worker TEXT NOT NULL, state TEXT NOT NULL,
        slot INTEGER, assigned DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION,
        ended DOUBLE PRECISION, status INTEGER)""",
    "CREATE INDEX IF NOT EXISTS executions_job ON executions (job)",
    "CREATE INDEX IF NOT EXISTS executions_active ON executions (state) "
    "WHERE state IN ('assigned', 'running', 'committing')",
    # a worker's active executions (ops.busy_slots, at every claim): without it each claim
    # scanned every execution the database ever held (the simulator's finding, docs/sim.md)
    "CREATE INDEX IF NOT EXISTS executions_worker_active ON executions (worker, state) "
    "WHERE state IN ('assigned', 'running', 'committing', 'applying')",
    """CREATE TABLE IF NOT EXISTS events (
        t DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, job BIGINT, execution BIGINT,
        worker TEXT, detail TEXT)""",
    "CREATE INDEX IF NOT EXISTS events_job ON events (job)",
    # the end of each execution's output (base64), as its worker reported it: `brasil output`
    """CREATE TABLE IF NOT EXISTS outputs (
        execution BIGINT PRIMARY KEY, job BIGINT NOT NULL, size BIGINT NOT NULL,
        tail TEXT NOT NULL, place TEXT NOT NULL)""",
]

# Columns added after a database could already exist: (table, column, type). A database made
# before them gets them when it is opened (ALTER TABLE … ADD COLUMN), so it still opens.
ADDED_COLUMNS = [
    ("jobs", "time_limit", "INTEGER NOT NULL DEFAULT 0"),  # seconds an execution may run
    ("jobs", "failures", "INTEGER NOT NULL DEFAULT 0"),  # failed executions so far (backoff)
    ("jobs", "not_before", "DOUBLE PRECISION"),  # a retry waits until then (None: ready now)
    ("jobs", "failed_on", "TEXT"),  # the worker of its last failed execution (avoided next)
]


def add_missing_columns(tx: Tx) -> None:
    for table, column, kind in ADDED_COLUMNS:
        if tx.pg:
            have = tx.one("SELECT 1 FROM information_schema.columns WHERE table_schema = "
                          "current_schema() AND table_name = ? AND column_name = ?",
                          (table, column)) is not None
        else:
            have = any(r[1] == column for r in tx.all(f"PRAGMA table_info({table})"))
        if not have:
            tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


class StoreError(Exception):
    """The database cannot be used; the message says which and why."""


class Refused(Exception):
    """An operation's own checks refused it (a bad id, say): nothing it did is kept."""


class Tx:
    """One transaction on one connection; SQL is written with ``?`` placeholders."""

    def __init__(self, store: Store, conn: Any) -> None:
        self.store = store
        self.conn = conn
        self.pg = store.dialect == "postgresql"
        self.cur = conn.cursor()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cur.execute(self._sql(sql), params)
        return self.cur

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.cur.execute(self._sql(sql), params)
        return list(self.cur.fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self.cur.execute(self._sql(sql), params)
        return self.cur.fetchone()

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self.cur.executemany(self._sql(sql), rows)

    def insert(self, table: str, cols: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Many rows at once: executemany on SQLite, COPY on PostgreSQL."""
        rows = list(rows)
        if not rows:
            return
        if self.pg:
            with self.cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
        else:
            marks = ", ".join("?" * len(cols))
            self.cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)

    def skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED" if self.pg else ""

    def next_ids(self, counter: str, n: int) -> int:
        """Reserve ``n`` consecutive ids; returns the first. The counter row is locked until the
        transaction ends, so concurrent schedulers get disjoint blocks."""
        self.execute("UPDATE counters SET v = v + ? WHERE k = ?", (n, counter))
        row = self.one("SELECT v FROM counters WHERE k = ?", (counter,))
        assert row is not None
        return int(row[0]) - n + 1

    def in_chunks(self, sql: str, ids: Sequence[Any], extra: Sequence[Any] = (),
                  size: int = 500) -> list[tuple[Any, ...]]:
        """``sql`` with ``{ids}`` standing for a list of placeholders, run over chunks of ``ids``."""
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(ids), size):
            chunk = list(ids[i:i + size])
            q = sql.format(ids=", ".join("?" * len(chunk)))
            self.execute(q, (*extra, *chunk))
            if self.cur.description is not None:
                out += self.cur.fetchall()
        return out


def url_password(url: str) -> str | None:
    """The password a ``postgresql://`` URL carries (after the user, or as ``?password=``)."""
    if not url.startswith(("postgresql://", "postgres://")):
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return parts.password
    return urllib.parse.parse_qs(parts.query).get("password", [None])[0]


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def check_sqlite_files(path: str) -> None:
    """Refuse a SQLite database someone else could read or write: the jobs' environments are in
    it, and a job inserted into it runs as us. Its directory, and the directories above, must be
    closed to others (or they could plant the database, or its -wal and -shm, which SQLite opens
    by name); the file is created here, 0600, if it is missing; it and any side file that exists
    must be regular files of ours, closed to others — checked on what was opened."""
    check_ancestors(path)
    check_closed_dir(os.path.dirname(path), "the database's directory")
    os.close(open_checked(path, "database", os.O_RDWR, create=0o600))
    for suffix in SQLITE_SIDE_FILES:
        try:
            os.close(open_checked(path + suffix, "database file"))
        except FileNotFoundError:
            pass


Item = tuple[Callable[[Tx], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]
BATCH = 1000  # operations in one transaction at most


class Writer(Protocol):
    """What runs a store's writes: :meth:`Store._run_batch` over what was submitted meanwhile,
    one batch at a time, each batch's results handed back to the loops that asked."""

    def start(self, store: Store) -> None: ...

    def submit(self, item: Item) -> None: ...

    def stop(self) -> None: ...


class WriterThread:
    """The store's own thread (production): the loop never waits on the disk, and what is
    queued while a transaction commits goes into the next one together."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self, store: Store) -> None:
        self._thread = threading.Thread(target=self._run, args=(store,), name="batch-db",
                                        daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> None:
        self._queue.put(item)

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(30)
            self._thread = None

    def _run(self, store: Store) -> None:
        tx = Tx(store, store._conn)
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            store._run_batch(tx, batch)


class WriterOnLoop:
    """The batches run as callbacks of an event loop: ``loop``, or that of the first write.
    For the simulator (sim/batch.py), whose driver steps loops and nothing else: a thread's
    answer would arrive at whatever virtual instant the driver noticed it, and its CPU would
    be charged to no one. On the loop the scheduler runs on, the batches take its core (what
    the GIL makes of the thread for the Python part of every operation); on a loop of their
    own, a core of their own. Group commit is kept: what is submitted before the batch's turn
    comes goes into it."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self._pending: collections.deque[Item] = collections.deque()
        self._due = False
        self._store: Store | None = None
        self._tx: Tx | None = None

    def start(self, store: Store) -> None:
        self._store = store
        self._tx = Tx(store, store._conn)

    def submit(self, item: Item) -> None:
        self._pending.append(item)
        if not self._due:
            self._due = True
            if self.loop is None:
                self.loop = item[2]
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        n = min(len(self._pending), BATCH)
        batch = [self._pending.popleft() for _ in range(n)]
        self._due = bool(self._pending)
        if self._due:
            assert self.loop is not None
            self.loop.call_soon(self._drain)
        if batch and self._store is not None and self._tx is not None:
            self._store._run_batch(self._tx, batch)

    def stop(self) -> None:
        self._store = self._tx = None


class Store:
    """The database at ``url``: ``sqlite:///PATH`` (or a plain path) or ``postgresql://…``."""

    def __init__(self, url: str, password: str | None = None, *,
                 writer: Writer | None = None) -> None:
        """``password``: PostgreSQL's, if not in the URL (and not left to libpq, which reads
        PGPASSWORD, ~/.pgpass or PGPASSFILE itself). ``writer``: what runs the batches of
        writes (default: a thread of the store's own, :class:`WriterThread`)."""
        self.url = url
        self.password = password
        if url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self.path = None
        else:
            self.dialect = "sqlite"
            self.path = os.path.abspath(url[len("sqlite://"):] if url.startswith("sqlite://") else url)
        self.writer = writer or WriterThread()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="batch-db-read")
        self._local = threading.local()
        self.size_hint = 0

    def describe(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:{self.path}"
        p = urllib.parse.urlsplit(self.url)
        return f"postgresql:{p.path.lstrip('/') or '?'}"

    # ---- connections ----

    def connect(self) -> Any:
        if self.dialect == "sqlite":
            assert self.path is not None
            try:
                check_sqlite_files(self.path)
            except UnsafePathError as e:
                raise StoreError(str(e)) from None
            except OSError as e:
                raise StoreError(f"cannot open {self.path}: {e.strerror or e}") from None
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe against our crashes
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        try:
            import psycopg
        except ImportError:  # pragma: no cover - a pinned dependency
            raise StoreError("--db postgresql://…: psycopg is not installed (pip install "
                             "'psycopg[binary]')") from None
        try:
            if self.password is None:
                return psycopg.connect(self.url, autocommit=True)
            return psycopg.connect(self.url, autocommit=True, password=self.password)
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to {self.describe()}: {e}") from None

    def open(self) -> None:
        """Connect, make the schema, start the writer thread. Blocking: call before serving."""
        conn = self.connect()
        tx = Tx(self, conn)
        self._begin(tx)
        try:
            for stmt in SCHEMA:
                tx.execute(stmt)
            add_missing_columns(tx)
            for k in ("job", "execution"):
                if tx.one("SELECT v FROM counters WHERE k = ?", (k,)) is None:
                    tx.execute("INSERT INTO counters (k, v) VALUES (?, 0)", (k,))
            tx.execute("COMMIT")
        except BaseException:
            tx.execute("ROLLBACK")
            raise
        self._conn = conn
        self.writer.start(self)

    def close(self) -> None:
        self.writer.stop()
        self._reader.shutdown(wait=True)
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001
            pass

    def _begin(self, tx: Tx) -> None:
        tx.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")

    # ---- writes: batched transactions, run by the writer ----

    def write(self, op: Callable[[Tx], T]) -> asyncio.Future[T]:
        """Run ``op(tx)`` in the next batch; the future holds its result (or its exception)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self.writer.submit((op, fut, loop))
        return fut

    def _run_batch(self, tx: Tx, batch: list[Any]) -> None:
        """One transaction for the whole batch (group commit); if an operation fails, each is
        run again alone, so that only the failing one is blamed."""
        try:
            self._begin(tx)
            results = [op(tx) for op, _, _ in batch]
            tx.execute("COMMIT")
        except BaseException:  # noqa: BLE001 - one op failed: run each alone, to blame only it
            self._rollback(tx)
            if len(batch) == 1:
                op, fut, loop = batch[0]
                for attempt in range(MOVED_ATTEMPTS):
                    try:
                        self._begin(tx)
                        r = op(tx)
                        tx.execute("COMMIT")
                        self._resolve(fut, loop, r, None)
                    except BaseException as e:  # noqa: BLE001
                        self._rollback(tx)
                        if isinstance(e, Moved) and attempt + 1 < MOVED_ATTEMPTS:
                            continue  # another scheduler moved a row it read: run it again
                        if not isinstance(e, Refused):
                            limited.error(f"op {type(e).__name__}", "batch database operation "
                                          "failed", exc_info=(type(e), e, e.__traceback__))
                        self._resolve(fut, loop, None, e)
                    return
            for item in batch:
                self._run_batch(tx, [item])
            return
        for (_, fut, loop), r in zip(batch, results):
            self._resolve(fut, loop, r, None)

    def _rollback(self, tx: Tx) -> None:
        try:
            tx.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - no transaction was open
            pass

    @staticmethod
    def _resolve(fut: asyncio.Future[Any], loop: asyncio.AbstractEventLoop, result: Any,
                 exc: BaseException | None) -> None:
        def set_() -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
        try:
            loop.call_soon_threadsafe(set_)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    # ---- reads: a second connection ----

    def read(self, op: Callable[[Tx], T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._reader, self._read, op)

    def _read(self, op: Callable[[Tx], T]) -> T:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect()
        tx = Tx(self, conn)
        tx.execute("BEGIN")
        try:
            return op(tx)
        finally:
            self._rollback(tx)

    def size_bytes(self) -> int:
        """The database's size on disk (SQLite: file plus WAL), or as PostgreSQL reports it."""
        if self.dialect == "sqlite":
            assert self.path is not None
            return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal")
                       if os.path.exists(p))
        conn = self.connect()
        try:
            return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
        finally:
            conn.close()
