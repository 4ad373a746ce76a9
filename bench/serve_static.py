"""Our server (brasil.ninep.server.Server) serving a synthetic tree with one StaticFile ``file``.

    .venv/bin/python bench/serve_static.py [--tcp HOST:PORT] [--unix PATH] [--size N]

Runs until SIGTERM or SIGINT. With ``BENCH_PROFILE=PATH`` in the environment the whole run is
under cProfile and the stats are dumped to PATH (pstats format) on the way out; read them with
``python -m pstats PATH`` or ``bench/ninep_roundtrips.py --profile``.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from brasil.ninep.server import Server
from brasil.ninep.synthetic import Entry, StaticFile, TableDir
from brasil.ninep.transport import Address, parse_address
from common import until_signalled


async def serve(a: argparse.Namespace) -> None:
    content = b"x" * a.size
    root = TableDir([Entry("file", 0o444, lambda _owner: StaticFile(content))])
    server = Server(root)
    if a.tcp:
        await server.listen(parse_address(a.tcp))
    if a.unix:
        await server.listen(Address("unix", path=a.unix))
    await until_signalled(asyncio.get_running_loop())
    await server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tcp", help="HOST:PORT to listen on")
    ap.add_argument("--unix", help="Unix socket path to listen on")
    ap.add_argument("--size", type=int, default=64, help="bytes in the static file")
    a = ap.parse_args()
    prof_path = os.environ.get("BENCH_PROFILE")
    if not prof_path:
        asyncio.run(serve(a))
        return
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
    try:
        asyncio.run(serve(a))
    finally:
        prof.disable()
        prof.dump_stats(prof_path)


if __name__ == "__main__":
    main()
