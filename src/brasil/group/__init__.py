"""The cluster as one namespace, served: the query paths (``/csrv/query/<pred>/…``) every daemon
answers for its subtree, reduced in the tree.

``fanout`` is the bottom (which children may match, asking them); ``gread`` and ``views`` are
the files built on it; ``query`` is the directory on top and its one mount point. The programs
that use these paths (``brasil run``, the Python API, the parallel tools) are clients: they live
in ``brasil.client``. Node sets use ClusterShell's syntax (``n[1-3,7]``), tested by membership
in the daemons; selection by attributes is ``node.attrs``'s predicate language, the same for
``res … where``, query paths and group reads.
"""
