from brasil.ninep.client import Client
from fixtures import FixtureTree, serving


async def test_read_static_file_through_client():
    t = FixtureTree()
    async with serving(t.root) as (_, addr):
        c = await Client.connect(addr)
        assert await c.read("hello") == b"hello, world\n"
        await c.close()
