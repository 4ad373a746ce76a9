import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))

# Tests interrupt what they start (`cat` on a mount, `brasil ptop` at a terminal) with SIGINT, as
# a user's Ctrl-C would. A suite started from a script's background job (`make test &`) inherits
# SIGINT ignored, and so would every child it starts: Ctrl-C would then do nothing and those
# tests would hang to their deadlines. A handler of ours is reset to the default at each exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


import pytest  # noqa: E402


@pytest.fixture
async def node(tmp_path):  # type: ignore[no-untyped-def]
    """A node daemon with 4 slots exporting tmp_path/export, and a client on its Unix socket."""
    from brasil.ninep.client import Client
    from fixtures import node_daemon
    (tmp_path / "export").mkdir()
    async with node_daemon(str(tmp_path), slots=4, export=str(tmp_path / "export")) as (n, addr):
        c = await Client.connect(addr)
        yield n, c
        await c.close()
