"""The cluster as one namespace, for people: node sets, ``brasil run`` and the parallel tools.

``run`` is pdsh/clush's one command: reserve, exec, print node-prefixed (or grouped) output,
close; the exit status is the largest of the ranks'. Node sets use ClusterShell's syntax
(``n[1-3,7]``), folded only for display. Selection by attributes is ``node.attrs``'s predicate
language, the same for ``res … where``, query paths and group reads.
"""
