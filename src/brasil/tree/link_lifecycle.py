"""The lifecycle of a child's link to its parent, as a transition table (``brasil.lifecycle``
moves along it: :func:`~brasil.lifecycle.step`).

The link (``link.py``) dials an ancestor, registers with ``join NAME``, stays joined until a
connection drops or the parent stops polling it, then re-homes under the nearest live ancestor;
whichever attempt fails, it tries the next ancestor at once, and when every one has failed it
waits (doubling up to 5 s) and starts again from the nearest. A link found by zeroconf
(``serve --discover``, ``discover.py``) starts by browsing instead: it dials the ranked candidates
in turn, becomes a root when none accepts, and browses again (rather than waiting) when every
candidate or ancestor has failed; a root browses again when a root whose name sorts before its
own is announced. ``stop`` ends it from any state.
``python -m brasil.tree.link_lifecycle`` writes docs/tree-lifecycles.md from the table; a test
keeps the two equal.
"""

from __future__ import annotations

from ..lifecycle import mermaid

_LINK = {
    ("idle", "start"): "dialing",
    ("dialing", "dialed"): "joining",    # both connections up, the parent's /csrv mounted
    ("dialing", "fail"): "failed",       # refused, unreachable, or slower than JOIN_TIMEOUT
    ("joining", "joined"): "joined",     # join answered, our connection handed over to it
    ("joining", "fail"): "failed",
    ("joined", "lost"): "lost",          # a connection dropped, or no heartbeat for 2.5 s
    ("lost", "rehome"): "dialing",       # the nearest ancestor above the lost parent first
    ("lost", "back_off"): "waiting",     # lost within 2.5 s of the join: it did not hold
    ("failed", "next"): "dialing",       # another ancestor is left to try: at once
    ("failed", "back_off"): "waiting",   # every ancestor failed: wait, then from the nearest
    ("waiting", "retry"): "dialing",
    ("idle", "discover"): "discovering",     # no --parent: browse (discover.py)
    ("discovering", "found"): "dialing",     # ranked candidates, dialled in turn
    ("discovering", "none"): "root",         # nothing found, or none accepted us
    ("root", "discover"): "discovering",     # a root whose name sorts first was announced
    ("failed", "rediscover"): "discovering",  # discovered: every candidate or ancestor failed
}
LINK = {**_LINK, **{(s, "stop"): "stopped" for s in dict.fromkeys(s for s, _ in _LINK)}}


def document() -> str:
    return "\n".join([
        "# Tree lifecycles",
        "",
        "Generated from the transition table in `src/brasil/tree/link_lifecycle.py` by",
        "`python -m brasil.tree.link_lifecycle > docs/tree-lifecycles.md`; a test keeps the two",
        "equal. Session and slot lifecycles: [lifecycles.md](lifecycles.md).",
        "",
        mermaid("A child's link to its parent (dial, join, re-home)", LINK),
    ])


if __name__ == "__main__":
    print(document(), end="")
