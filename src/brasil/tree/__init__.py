"""Central services: the daemons form a tree (SPEC.md §4).

``remote`` serves another daemon's namespace as part of ours (proxy nodes over a 9P client);
``link`` is the child's side of joining (dial the parent, authenticate, register, hand a
connection over so the parent can reach back) and ``registry`` the parent's; ``reserve`` spreads a
reservation over the subtree and the parent; ``data`` carries spliced bytes node to node.
"""
