"""The lifecycles of one copy of a PUSH segment, on this machine (``push/local.py``) and on a
tree (``push/cluster.py``), as transition tables that :func:`~brasil.lifecycle.step` moves a
``Copy`` and a ``RemoteCopy`` along.

A copy fed by a fan-out (``|<``) waits for its first block before it starts, so that a small
input starts only the copies it needs, as GNU parallel does; if its input ends before any block
came, it never runs. Every other copy starts with the pipeline. A copy has exited once its last
process has. On a tree a copy is a rank of its segment's session, run by the chain that names
which of its commands failed: it ends with the status its node's ``wait`` gives, or lost (its
node, or the way to it, gone). ``python -m brasil.push.lifecycle`` prints its part of docs/transfer-lifecycles.md
(after ``python -m brasil.tree.transfer_lifecycle``'s).
"""

from __future__ import annotations

from ..lifecycle import mermaid

COPY = {
    ("new", "start"): "running",      # its processes were started
    ("new", "defer"): "waiting",      # fed by a fan-out: started by the first block dealt to it
    ("waiting", "start"): "running",
    ("waiting", "skip"): "skipped",   # its input ended before any block came: never runs
    ("running", "exit"): "exited",    # its last process has ended
}


REMOTE_COPY = {
    ("new", "exec"): "running",       # its segment's session ran the chain on every rank
    ("running", "exit"): "exited",    # its node's wait gave its status
    ("running", "lost"): "lost",      # no status: its node, or the way to it, was lost
}


def document() -> str:
    return ("\n" + mermaid("A copy of a PUSH segment on this machine", COPY) + "\n"
            + mermaid("A copy of a PUSH segment on a tree", REMOTE_COPY))


if __name__ == "__main__":
    print(document(), end="")
