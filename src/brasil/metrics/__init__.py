"""Metrics: a node's samples, subtree summaries reduced in the tree, history, Prometheus."""
