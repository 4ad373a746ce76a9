"""The node daemon: this machine's part of the namespace (SPEC.md §2–3).

``daemon`` holds the node's state (slots, sessions, default env and ns) and builds the tree served
at ``/csrv``; ``session`` is the session model (reservation, exec across sub-sessions, output
aggregation, input distribution, splices), ``leaf`` a sub-session holding one slot and running its
processes, ``scope`` what the two share, ``host`` the Protocols they use instead of importing
``daemon``, and ``session_files`` the directory table and ctl command table that expose them;
``lifecycle`` holds the transition tables; ``exportfs`` serves ``fs/`` without letting any path
escape its root.

A request flows: 9P server → a file of ``session_files`` → a method of :class:`Session` or
:class:`Leaf` → processes in ``brasil.exec`` whose pipes are bounded streams read back through the
same files.
"""
