"""Trees of in-process daemons bigger than fixtures.py's, shared by the test modules."""

from __future__ import annotations

from fixtures import tree_of, wait_for


def tree_1_3_9(tmp: str, slots: int = 2, **options):  # type: ignore[no-untyped-def]
    """n0; n1…n3 under it; n1.1…n3.3 below them: 13 daemons, ``slots`` each; ``options`` go to
    every daemon (fixtures.daemon: ``metrics_interval=1.0``…)."""
    return tree_of(tmp, 3, 3, slots=slots, timeout=30, **options)


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
