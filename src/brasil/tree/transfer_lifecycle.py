"""The lifecycle of one cut-through transfer (``tree/data.py``), as a transition table that
:func:`~brasil.lifecycle.step` moves a :class:`~brasil.tree.data.Transfer` along.

A consumer's side is expected (``waiting``) until its producer connects with the token, or the
token expires unused; a producer's side is ``running`` as soon as it has connected. Either ends
``done`` (the end frame came, or was sent) or ``failed`` (the other side, or our own consumer,
went away). Sessions show the state in their status; a failed one is an error there.
``python -m brasil.tree.transfer_lifecycle`` prints its part of docs/transfer-lifecycles.md.
"""

from __future__ import annotations

from ..lifecycle import mermaid

TRANSFER = {
    ("waiting", "connect"): "running",
    ("waiting", "expire"): "unused",   # the arranging node went through the tree, or nobody came
    ("running", "end"): "done",        # a clean end of file (the zero frame)
    ("running", "fail"): "failed",     # producer lost, or consumer gone
}

HEADER = """# Transfer lifecycles

Generated from the transition tables in `src/brasil/tree/transfer_lifecycle.py` and
`src/brasil/push/lifecycle.py` by `python -m brasil.tree.transfer_lifecycle >
docs/transfer-lifecycles.md; python -m brasil.push.lifecycle >> docs/transfer-lifecycles.md`;
a test keeps the page equal to them. An event not drawn here is refused with an error naming
the state. Sessions and slots: [lifecycles.md](lifecycles.md).
"""


def document() -> str:
    return "\n".join([
        HEADER,
        mermaid("A cut-through transfer (a splice, gather or scatter between daemons)",
                TRANSFER),
    ])


if __name__ == "__main__":
    print(document(), end="")
