"""Serve aio9p's example in-memory file server on a Unix socket.

Run with the aio9p peer virtualenv's python, never ours:

    .peers/aio9p/bin/python tests/peers/aio9p_server.py SOCKET_PATH [9P2000|9P2000.u]

This is aio9p.example.example_server (aio9p/example/__init__.py) with the socket path taken from
argv instead of the fixed ./py9p.sock, and logging at WARNING on stderr so a failing test can show
it. As in the example, every connection gets its own implementation instance, so each connection
starts from an empty root directory. Dialects:

 - ``9P2000``: aio9p.example.simple.Simple9P2000 with one workaround (:class:`Simple9P2000Fixed`).
   Its errhandler answers an errno-carrying exception (e.g. a walk to a missing name raises
   Py9PException(ENOENT)) with a 9P2000.u-shaped Rerror -- ename *plus* errno[4] -- even though
   9P2000 was negotiated; aio9p's comment says so ("technically 9P2000.u-specific, but the Linux
   driver appears to need it"). A strict 9P2000 decoder sees 4 stray bytes after the last field.
   The workaround sends the same message without the errno field, as 9P2000 defines Rerror.
 - ``9P2000-unpatched``: Simple9P2000 exactly as shipped, to check how our client copes with it.
 - ``9P2000.u``: aio9p.example.simple_u.Simple9P2000u as shipped. (Its version_u crashes when a
   client asks for plain 9P2000 -- it logs ``srvver`` before assigning it -- so only 9P2000.u
   clients can use it.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aio9p.dialect.Py9P2000 import p9_error
from aio9p.example.simple import Simple9P2000
from aio9p.example.simple_u import Simple9P2000u
from aio9p.protocol import Py9PException, Py9PServer


class Simple9P2000Fixed(Simple9P2000):
    """Simple9P2000 whose Rerror has the 9P2000 shape: ename only (see the module docstring)."""

    def errhandler(self, exception):
        msg = exception.args[0] if isinstance(exception, Py9PException) and exception.args else None
        if isinstance(msg, int):
            text = os.strerror(msg)
        elif msg is not None:
            text = str(msg)
        else:
            text = f"Exception: {exception}"
        return p9_error(text.encode("utf-8"))


DIALECTS = {"9P2000": Simple9P2000Fixed, "9P2000-unpatched": Simple9P2000,
            "9P2000.u": Simple9P2000u}


async def main(path: str, dialect: str) -> None:
    impl = DIALECTS[dialect]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="aio9p %(name)s: %(message)s", force=True)
    logger = logging.getLogger("aio9p-peer")
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    server = await asyncio.get_running_loop().create_unix_server(
        lambda: Py9PServer(impl(65535, logger=logger.getChild("implementation")),
                           logger=logger.getChild("server")),
        path=path)
    async with server:
        await server.start_serving()
        print("ready", flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "9P2000"))
