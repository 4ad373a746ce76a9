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
(``commit.py``; from another host, through 9P: ``remote_homes.py``) and the others are killed. The
scheduler survives its own restart: everything it needs is in the database.
``scheduler.py`` holds the in-memory part; ``report.py`` the accounting; ``api.py`` the Python API.

Layering: imports ninep, exec and ``brasil.lifecycle``; never node (nor node batch). This
package file imports none of its modules: each is imported by name (``batch.store``,
``batch.files``…), so none of them imports the package back, and a command that needs one piece
(``brasil serve``'s password check) does not load the scheduler. The composition
(``cli/compose.py``) starts the scheduler and mounts ``files.batch_dir``.
"""

