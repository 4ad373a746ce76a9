"""aio9p 0.3.3's own 9P2000 server, serving one static file ``file`` at the root.

    .peers/aio9p/bin/python bench/aio9p_server.py [--tcp HOST:PORT] [--unix PATH] [--size N]

The implementation is aio9p's example ``Simple9P2000`` (in-memory files, reads slice the content),
with ``attach`` extended to put one file in the root; the protocol is aio9p's ``Py9PServer``, one
implementation per connection as aio9p's ``example_server`` does. aio9p's example listens only on
a Unix socket; this launcher uses ``loop.create_server`` for TCP as well. Logging is aio9p's
default null logger, so no log formatting is paid for.
"""

from __future__ import annotations

import argparse
import asyncio

from aio9p.constant import DMFILE
from aio9p.example.simple import BASEQID, Simple9P2000
from aio9p.helper import mkqid
from aio9p.protocol import Py9PServer
from aio9p.stat import Py9P2000Stat

from common import serve_until_signalled

MSIZE = 65535  # what aio9p's example_server offers


class OneFile(Simple9P2000):
    content = b"x"

    async def attach(self, fid, afid, uname, aname):
        qid = await super().attach(fid, afid, uname, aname)
        fqid = mkqid(0, 1)  # a plain file, qid.path 1 (the root is path 0)
        self._direntry[BASEQID][b"file"] = fqid
        self._content[fqid] = self.content
        self._stat[fqid] = Py9P2000Stat(
            p9type=0, p9dev=0, p9qid=fqid, p9mode=DMFILE | 0o444, p9atime=0, p9mtime=0,
            p9length=len(self.content), p9name=b"file", p9uid=b"root", p9gid=b"root",
            p9muid=b"root")
        return qid


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tcp", help="HOST:PORT to listen on")
    ap.add_argument("--unix", help="Unix socket path to listen on")
    ap.add_argument("--size", type=int, default=64, help="bytes in the static file")
    a = ap.parse_args()
    OneFile.content = b"x" * a.size
    loop = asyncio.get_running_loop()

    def factory() -> Py9PServer:
        return Py9PServer(OneFile(MSIZE))

    await serve_until_signalled(loop, factory, a.tcp, a.unix)


if __name__ == "__main__":
    asyncio.run(main())
