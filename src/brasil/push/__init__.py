"""PUSH, the dataflow shell (SPEC.md §5): pipelines of ordinary programs whose pipes fan out,
fan in and hash across copies, locally or over the cluster's sessions.

``syntax`` turns text into statements of pipelines (commands stay text for /bin/sh); ``plan``
turns a pipeline into segments — runs of commands joined by plain pipes, each one /bin/sh
pipeline per copy — and the edges between them (balance, merge, hash), with their record modules
from ``exec.records``. ``local`` runs a plan with processes and OS pipes on this machine;
``remote`` runs it as sessions spread over the tree, the daemons moving bytes node to node.
``shell`` runs scripts and the interactive prompt; ``status`` draws the live status line.
"""
