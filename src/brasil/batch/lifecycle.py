"""The lifecycles of a batch job and of one execution of it, as transition tables.

One module says what may happen in which state (as ``node/lifecycle.py`` does for sessions;
``brasil.lifecycle`` holds what moves along any table), so
the scheduler cannot, say, commit a job twice or revive a cancelled one: an event that is not in
the table raises, naming the state. The database stores the states these tables produce; the
scheduler's SQL only ever moves a row along an edge drawn here (the conditional updates in
``store.py`` name the states they move from). ``python -m brasil.batch.lifecycle`` writes
docs/batch-lifecycles.md from the tables; a test keeps the two equal.
"""

from __future__ import annotations

from ..lifecycle import mermaid, step

# A job: waiting → ready → running → exiting → done, plus failed and cancelled (SPEC.md §6).
JOB = {
    ("waiting", "deps_done"): "ready",
    ("waiting", "cancel"): "cancelled",       # by hand, or a dependency failed or was cancelled
    ("ready", "assign"): "running",
    ("ready", "cancel"): "cancelled",
    ("running", "assign"): "running",         # a redundant execution of a running isolated job
    ("running", "win"): "exiting",            # an isolated execution ended 0: it commits
    ("running", "succeed"): "done",           # a non-isolated execution ended 0
    ("running", "retry"): "ready",            # no execution left, retries or losses remain
    ("running", "fail"): "failed",            # retries spent and no execution left
    ("running", "cancel"): "cancelled",
    ("exiting", "committed"): "done",
    ("exiting", "commit_lost"): "ready",      # the committer died before its journal was whole
    ("failed", "retry_request"): "ready",     # `brasil retry`: run it again, retries renewed
    ("cancelled", "restore"): "waiting",      # cancelled for a dependency now retried
}

# One execution of a job on one worker slot; its id is the fencing token.
EXECUTION = {
    ("assigned", "start"): "running",
    ("assigned", "kill"): "killed",
    ("assigned", "lose"): "lost",
    ("assigned", "fail"): "failed",           # could not even start (bad home, no isolation)
    ("running", "succeed"): "finished",       # non-isolated, exit 0: the job is done
    ("running", "win"): "committing",         # isolated, exit 0, first: told to commit
    ("running", "win_clean"): "committed",    # isolated, exit 0, first, and nothing changed
    ("running", "late"): "rolledback",        # isolated, exit 0, but another already won
    ("running", "fail"): "failed",            # non-zero exit
    ("running", "kill"): "killed",            # another execution won, or the job was cancelled
    ("running", "lose"): "lost",              # its lease expired: presumed dead
    ("committing", "journaled"): "applying",  # changes staged and journal whole: commit point
    ("committing", "lose"): "lost",           # died while staging: rolled back, job runs again
    ("committing", "fail"): "failed",         # staging failed (disk full, say)
    ("applying", "committed"): "committed",   # by the worker, or replayed by the scheduler
}

JOB_STATES = ("waiting", "ready", "running", "exiting", "done", "failed", "cancelled")
TERMINAL = frozenset({"done", "failed", "cancelled"})
ACTIVE_EXECUTION = frozenset({"assigned", "running", "committing", "applying"})


def job_step(state: str, event: str, job: int | str) -> str:
    return step(JOB, state, event, f"job {job}")


def execution_step(state: str, event: str, token: int | str) -> str:
    return step(EXECUTION, state, event, f"execution {token}")


def document() -> str:
    return "\n".join([
        "# Batch lifecycles",
        "",
        "Generated from the transition tables in `src/brasil/batch/lifecycle.py` by",
        "`python -m brasil.batch.lifecycle > docs/batch-lifecycles.md`; a test keeps the two equal.",
        "An event not drawn here is refused with an error naming the state. An execution's id is",
        "its fencing token: a report that names an execution no longer in an active state",
        "(assigned, running, committing, applying) is refused, and its changes discarded.",
        "",
        mermaid("A job", JOB),
        mermaid("An execution (one run of a job on one worker slot)", EXECUTION),
    ])


if __name__ == "__main__":
    print(document(), end="")
