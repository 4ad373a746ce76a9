"""What the batch tests share (no tests here): a scheduler in a daemon, workers, the database.

`db_url` is parametrized: every test that takes it runs against SQLite (a real file in WAL mode)
and against a real PostgreSQL server (tests/services.py; skipped with its reason where the
Debian package cannot be had), each test on a fresh database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import services
from brasil.batch.api import Batch
from brasil.batch.scheduler import Scheduler
from brasil.batch.worker import Worker
from brasil.ninep.client import Client
from brasil.ninep.errors import NinepError
from fixtures import daemon, wait_for

postgres_server = services.postgres_server
_dbs = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/batch.db"
    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"batch_{os.getpid()}_{next(_dbs)}")


@contextlib.asynccontextmanager
async def scheduler(tmp: str, db: str | None = None, *, lease: float = 2.0,
                    export: str | None = None) -> AsyncIterator[tuple[Any, Scheduler, Batch]]:
    """A daemon (no slots of its own) serving a scheduler; yields (daemon, scheduler, api)."""
    async with daemon(tmp, "sched", slots=0, export=export, db=db or f"{tmp}/batch.db",
                      lease=lease) as d:
        b = Batch(await Client.connect(d.unix))
        try:
            yield d, d.scheduler, b
        finally:
            await b.close()


@contextlib.asynccontextmanager
async def workers(address: Any, tmp: str, n: int = 2, slots: int = 2,
                  **kw: Any) -> AsyncIterator[list[Worker]]:
    """``n`` in-process workers dialling ``address``; stopped (their jobs killed) at the end."""
    ws = [Worker(lambda: Client.connect(address), slots, f"{tmp}/worker{i}", **kw)
          for i in range(n)]
    tasks = [asyncio.ensure_future(w.run()) for w in ws]
    try:
        await wait_for(lambda: all(w.connected.is_set() for w in ws), timeout=10)
        yield ws
    finally:
        for w in ws:
            w.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


def spawn_worker(address: str, tmp: str, name: str, slots: int = 1, *extra: str,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`brasil worker` as its own process (for kill -9 and SIGSTOP); its log in tmp/NAME.log."""
    log = open(os.path.join(tmp, f"{name}.log"), "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "brasil.cli.main", "worker", "--at", address, "--slots",
         str(slots), "--name", name, "--workdir", os.path.join(tmp, name), *extra],
        stdout=log, stderr=log, env={**os.environ, **(env or {})}, start_new_session=True)


async def connect_batch(address: str, timeout: float = 20) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        try:
            b = Batch(await Client.connect(address))
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        try:
            await b.state()  # the scheduler is served a moment after the socket exists
            return b
        except NinepError:
            await b.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def commits_per_job(events: list[Any]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for e in events:
        if e.kind == "commit" and e.job is not None:
            out.setdefault(e.job, []).append(e.execution)
    return out


def tree(path: str) -> dict[str, str]:
    """Every regular file under ``path`` (relative name → content), dot-files of ours excluded."""
    out = {}
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".brasil-")]
        for f in files:
            full = os.path.join(root, f)
            with open(full, errors="replace") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return out
