"""Server transcripts: ``T…`` lines are sent, ``R…`` lines are the replies expected, in order.

Each file in tests/transcripts/ is replayed against a fresh FixtureTree. In an expected line, a
``_`` stands for any one value (a qid, a time). Directives: ``@conn NAME`` switches to (and opens)
another connection; ``@raw HEX`` sends raw bytes; ``@closed`` expects the server to close the
current connection. A connection switches to 9P2000.u framing once it sees an Rversion saying so.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from brasil.ninep import synthetic, text
from brasil.ninep.framing import FrameReader
from brasil.ninep.messages import Rversion, encode
from fixtures import FixtureTree, serving

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts").glob("*.txt"))
REPLY_TIMEOUT = 5.0


def matches(expected: Any, actual: Any) -> bool:
    """Token trees equal, ``_`` matching anything; quoting does not matter, only the value."""
    if isinstance(expected, tuple):
        expected = expected[1]
    if isinstance(actual, tuple):
        actual = actual[1]
    if expected == "_":
        return True
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(matches, expected, actual))
    return bool(expected == actual)


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = FrameReader(1 << 24)

    async def next_reply(self) -> Any:
        while True:
            msg = self.frames.next_message()
            if msg is not None:
                if isinstance(msg, Rversion):
                    self.frames.dotu = msg.version == "9P2000.u"
                return msg
            data = await asyncio.wait_for(self.reader.read(65536), REPLY_TIMEOUT)
            if not data:
                raise ConnectionError("server closed the connection")
            self.frames.feed(data)


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
async def test_transcript(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "OWNER", "glenda")
    tree = FixtureTree()
    async with serving(tree.root) as (_, addr):
        peers: dict[str, Peer] = {}

        async def peer(name: str) -> Peer:
            if name not in peers:
                peers[name] = Peer(*await asyncio.open_connection(addr.host, addr.port))
            return peers[name]

        current = await peer("main")
        try:
            for lineno, raw in enumerate(path.read_text().splitlines(), 1):
                line = raw.strip()
                where = f"{path.name}:{lineno}"
                if not line or line.startswith("#"):
                    continue
                if line.startswith("@conn "):
                    current = await peer(line.split()[1])
                elif line.startswith("@raw "):
                    current.writer.write(bytes.fromhex(line[5:].replace(" ", "")))
                    await current.writer.drain()
                elif line == "@closed":
                    data = await asyncio.wait_for(current.reader.read(65536), REPLY_TIMEOUT)
                    assert data == b"", f"{where}: expected the server to close, got {data!r}"
                elif line.startswith("T"):
                    current.writer.write(encode(text.parse(line), current.frames.dotu))
                    await current.writer.drain()
                elif line.startswith("R"):
                    got = text.format(await current.next_reply())
                    assert matches(text.tokenize(line), text.tokenize(got)), \
                        f"{where}: expected\n  {line}\ngot\n  {got}"
                else:
                    raise AssertionError(f"{where}: cannot read line {line!r}")
        finally:
            for p in peers.values():
                p.writer.close()
