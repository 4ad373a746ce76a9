"""Failures in a simulated tree: how long until a death is noticed, and until a subtree re-homes.

A killed daemon's connections end (its parent notices at once: the poll's connection is lost);
a frozen one only stops answering (its parent notices when a poll times out, 3 s, and its
children when they stop being polled, 2.5 s after the last poll). An interior node's children
join the nearest live ancestor (tree/link.py) and bring their subtrees along; the root has the
whole tree again once its ``subtree`` lines count every live node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .cluster import SimCluster


async def _until(cond: Callable[[], bool], limit: float, what: str) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not cond():
        if loop.time() - t0 > limit:
            raise TimeoutError(f"{what}: not within {limit:g} virtual seconds")
        await asyncio.sleep(0.01)
    return loop.time() - t0


def _parent_of(cluster: SimCluster, name: str) -> str:
    for n, p in cluster.layout:
        if n == name:
            assert p is not None, "the root has no parent"
            return p
    raise KeyError(name)


def _root_names(cluster: SimCluster) -> set[str]:
    return {ln.split(" ", 1)[0] for ln in cluster.root.daemon.children.status_lines()}


def _root_count(cluster: SimCluster) -> int:
    return len(cluster.root.daemon.children.status_lines())


def lose(cluster: SimCluster, name: str, how: str = "kill") -> dict[str, Any]:
    """``name`` is killed (``kill``) or hangs (``freeze``): virtual seconds until its parent
    drops it (``detect``), until the root's subtree lines no longer name it (``root_view``),
    and, for an interior node, until the root sees every other live node (``rehome``: its
    subtree joined the nearest live ancestor; a killed node's children may do so before the
    root's view has changed)."""
    parent = cluster.daemons[_parent_of(cluster, name)].daemon.children
    below = any(n.startswith(name + ".") for n, _ in cluster.layout)
    (cluster.kill if how == "kill" else cluster.freeze)(name)
    others = len(cluster.layout) - 1 - len(cluster.lost)  # every live node but the root

    async def watch() -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["detect"] = await _until(lambda: name not in parent.by_name, 30, f"{name}'s loss")
        out["root_view"] = out["detect"] + await _until(
            lambda: name not in _root_names(cluster), 30, "the root's view of the loss")
        if below:
            out["rehome"] = out["root_view"] + await _until(
                lambda: _root_count(cluster) >= others, 60, f"{name}'s subtree re-homing")
        return out
    return cluster.run(watch(), limit=120)
