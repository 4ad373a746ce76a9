"""Serve aio9p's example in-memory file server on a Unix socket.

Run with the aio9p peer virtualenv's python, never ours:

    .peers/aio9p/bin/python tests/peers/aio9p_server.py SOCKET_PATH [9P2000|9P2000.u]

This is aio9p.example.example_server (aio9p/example/__init__.py) with the socket path taken from
argv instead of the fixed ./py9p.sock, and logging at WARNING on stderr so a failing test can show
it. 9P2000 serves aio9p.example.simple.Simple9P2000, 9P2000.u serves
aio9p.example.simple_u.Simple9P2000u. As in the example, every connection gets its own
implementation instance, so each connection starts from an empty root directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aio9p.example.simple import Simple9P2000
from aio9p.example.simple_u import Simple9P2000u
from aio9p.protocol import Py9PServer


async def main(path: str, dialect: str) -> None:
    impl = {"9P2000": Simple9P2000, "9P2000.u": Simple9P2000u}[dialect]
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
