"""The lifecycles of a session and of a slot, as transition tables (``brasil.lifecycle`` moves
along them: :func:`~brasil.lifecycle.step`).

An event not in the table raises :class:`NinepError` naming the state and the allowed events, so
``exec`` on a closed session, say, fails the ctl write with a sentence instead of corrupting state.
``python -m brasil.node.lifecycle`` writes docs/lifecycles.md from the tables.
"""

from __future__ import annotations

from ..lifecycle import mermaid

# Session: new → reserving → reserved → running ⇄ done; closed from anywhere. Once it holds
# slots it may grow (`res +N`), shrink (`release RANKS`) and start some ranks (`exec @RANKS`,
# `exec +`) without leaving its state, except that starting ranks makes it run.
SESSION = {
    ("new", "reserve"): "reserving",
    ("new", "close"): "closed",
    ("reserving", "granted"): "reserved",  # every slot asked for, here or through neighbours
    ("reserving", "refused"): "new",       # not enough slots, or a neighbour failed: ask again
    ("reserving", "close"): "closed",      # from another handle; the slots granted are released
    ("reserved", "exec"): "running",
    ("reserved", "close"): "closed",
    ("running", "finish"): "done",
    ("running", "close"): "closed",
    ("done", "exec"): "running",
    ("done", "close"): "closed",
    ("reserved", "grow"): "reserved",  # all of `res +N` or nothing; nothing starts
    ("running", "grow"): "running",
    ("done", "grow"): "done",
    ("reserved", "release"): "reserved",  # those ranks killed, their slots freed
    ("running", "release"): "running",
    ("done", "release"): "done",
    ("reserved", "exec_ranks"): "running",  # the ranks named; the others go on as they were
    ("running", "exec_ranks"): "running",
    ("done", "exec_ranks"): "running",
}

# One slot of a session (a leaf sub-session, leaf.py).
SLOT = {
    ("idle", "start"): "running",
    ("idle", "defer"): "waiting",  # lazy: started by the first bytes of its input
    ("waiting", "start"): "running",
    ("waiting", "skip"): "exited",  # its input ended empty: nothing to run
    ("waiting", "killed"): "killed",
    ("waiting", "fail"): "failed",
    ("waiting", "release"): "released",
    ("idle", "fail"): "failed",
    ("idle", "release"): "released",
    ("running", "exit"): "exited",
    ("running", "killed"): "killed",
    ("running", "fail"): "failed",
    ("running", "release"): "released",
    ("exited", "start"): "running",
    ("exited", "defer"): "waiting",
    ("exited", "release"): "released",
    ("killed", "start"): "running",
    ("killed", "defer"): "waiting",
    ("killed", "release"): "released",
    ("failed", "start"): "running",
    ("failed", "defer"): "waiting",
    ("failed", "release"): "released",
}

# Where each starts: the first row's state, as the diagrams draw it.
SESSION_START = next(iter(SESSION))[0]
SLOT_START = next(iter(SLOT))[0]


def document() -> str:
    return "\n".join([
        "# Lifecycles",
        "",
        "Generated from the transition tables in `src/brasil/node/lifecycle.py` by",
        "`python -m brasil.node.lifecycle > docs/lifecycles.md`; a test keeps the two equal.",
        "An event not drawn here is refused with an error naming the state.",
        "Batch jobs and executions: [batch-lifecycles.md](batch-lifecycles.md).",
        "",
        mermaid("A session", SESSION),
        mermaid("A slot (a sub-session that runs processes here)", SLOT),
    ])


if __name__ == "__main__":
    print(document(), end="")
