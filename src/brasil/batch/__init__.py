"""Batch workloads that slow and dead nodes cannot stretch (SPEC.md §6; the Trellis thesis).

Theory of operation. A scheduler lives in a node daemon and is served as files under
``/csrv/local/batch`` (``files.py``). Jobs — command lines with dependencies, a home directory and
an isolation flag — are submitted as a job file (``jobfile.py``) and kept, with every execution
and every event, in a database (``store.py``: SQLite by default, PostgreSQL for a shared one);
each state change is one conditional update along the transition tables (``lifecycle.move``)
(``ops.py``), batched into group commits. Placeholders (``worker.py``) pull work over one
persistent 9P connection; an execution's id is its fencing token, and leases say which workers
are alive. The selection policy (``policy.py``) gives ready jobs first and, when none is left,
runs isolated jobs redundantly. An isolated execution runs in an overlay of its home
(``isolate.py``); the first to end with 0 commits its changes through a journal of renames
(``commit.py``; from another host, through 9P: ``remote.py``) and the others are killed. The
scheduler survives its own restart: everything it needs is in the database.
``scheduler.py`` holds the in-memory part; ``report.py`` the accounting; ``api.py`` the Python API.

Layering: imports ninep, exec and ``brasil.lifecycle``; never node (nor node batch).
"""

from __future__ import annotations

import os
from typing import Any

from .scheduler import DEFAULT_LEASE, DEFAULT_MAX_SUBMIT, DEFAULT_MAX_WORKLOAD, Scheduler
from .store import Store, StoreError, url_password


async def serve_scheduler(node: Any, db: str | None, state_dir: str,
                          lease: float = DEFAULT_LEASE, password: str | None = None,
                          **limits: int) -> Scheduler:
    """Start a scheduler on ``db`` (default: ``batch.db`` in ``state_dir``; ``password``: the
    PostgreSQL password, if given apart) and serve it as ``/csrv/local/batch`` on ``node``.
    ``limits``: ``max_submit`` and ``max_workload`` (Scheduler's). Stop it with
    ``await scheduler.stop()``."""
    from .files import batch_dir
    url = db or os.path.join(state_dir, "batch.db")
    export = node.export.root if getattr(node, "export", None) is not None else None
    sched = Scheduler(Store(url, password), export_root=export, lease=lease, **limits)
    await sched.start()
    node.local.add("batch", batch_dir(sched))
    return sched


__all__ = ["Scheduler", "Store", "StoreError", "serve_scheduler", "url_password", "DEFAULT_LEASE",
           "DEFAULT_MAX_SUBMIT", "DEFAULT_MAX_WORKLOAD"]
