"""Processes and the bytes between them.

``records`` cuts byte streams into records (newline, NUL, fixed size, regex) so that output is
interleaved and input is distributed only on record boundaries. ``process`` runs one command in
its own process group with pipes whose reading side is a bounded :class:`~brasil.ninep.synthetic.Stream`
(back-pressure instead of loss). ``nsexec`` is the small program that applies a session's ``ns``
lines in a private mount namespace before running the command.
"""
