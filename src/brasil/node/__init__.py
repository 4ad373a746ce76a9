"""The node daemon: this machine's part of the namespace (SPEC.md §2–3).

``daemon`` holds the node's state (slots, sessions, default env and ns) and builds the tree served
at ``/csrv``; ``namespace`` declares ``/csrv/local``'s files; ``session`` is the session model
(reservation, exec, output aggregation, input distribution, splices) and ``session_files`` the
directory table and ctl command table that expose it; ``lifecycle`` holds the transition tables;
``exportfs`` serves ``fs/`` without letting any path escape its root.

A request flows: 9P server → a file of ``session_files`` → a method of :class:`Session` → processes
in ``brasil.exec`` whose pipes are bounded streams read back through the same files.
"""
