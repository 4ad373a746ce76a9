"""Trees of in-process daemons bigger than fixtures.py's, shared by the test modules."""

from __future__ import annotations

import contextlib

from fixtures import daemon, wait_for


@contextlib.asynccontextmanager
async def tree_1_3_9(tmp: str, slots: int = 2, **options):  # type: ignore[no-untyped-def]
    """n0; n1…n3 under it; n1.1…n3.3 below them: 13 daemons, ``slots`` each; ``options`` go to
    every daemon (fixtures.daemon: ``metrics_interval=1.0``…)."""
    from brasil.ninep.client import Client
    async with contextlib.AsyncExitStack() as stack:
        nodes = {"n0": await stack.enter_async_context(daemon(tmp, "n0", slots=slots, **options))}
        for i in (1, 2, 3):
            nodes[f"n{i}"] = await stack.enter_async_context(
                daemon(tmp, f"n{i}", slots=slots, parent=nodes["n0"].unix, **options))
            for j in (1, 2, 3):
                nodes[f"n{i}.{j}"] = await stack.enter_async_context(
                    daemon(tmp, f"n{i}.{j}", slots=slots, parent=nodes[f"n{i}"].unix,
                           **options))
        await wait_for(lambda: len(nodes["n0"].children.status_lines()) == 12, timeout=30)
        c = await Client.connect(nodes["n0"].unix)
        try:
            yield nodes, c
        finally:
            await c.close()


async def label_racks(nodes) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """n1, n2, n3 and their children become racks r1, r2, r3 (label ``rack``), once the root
    has heard all 12: the tree's placement tests spread over them. Returns node → rack."""
    rack = {}
    for name, d in nodes.items():
        if name != "n0":
            rack[name] = d.node.labels["rack"] = f"r{name[1]}"
    await wait_for(lambda: sum("rack=" in ln for ln in nodes["n0"].children.status_lines()) == 12,
                   timeout=20)
    return rack
