"""Brasil: a cluster driven as one computer through a 9P file tree.

The package tree is the architecture (see ARCHITECTURE.md): ``ninep`` speaks the protocol and knows
nothing of ours; the layers above it (node daemon, tree, PUSH, batch, groups, mount) each import only
what lies below them; ``cli`` is the one place that turns exceptions into messages for people.
"""

__version__ = "0.1.0"
