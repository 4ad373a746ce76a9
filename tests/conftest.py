import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


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
