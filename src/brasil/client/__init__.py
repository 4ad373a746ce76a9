"""Programs that drive the daemons over 9P, as any client would: nothing here serves.

``session`` is a session as a client drives it (clone, ctl lines, status rows, wait, data
endpoints), used by ``brasil run``, PUSH's remote engine, ``brasil workers`` and the daemons'
own delegation to a neighbour; ``run`` is ``brasil run``; ``group`` the Python API of the query
paths (nodes, group reads, control, follow, pcp, psync). It imports only ``ninep``, so every
layer above may use it.
"""
