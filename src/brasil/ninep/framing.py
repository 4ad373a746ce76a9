"""Splitting a byte stream into 9P frames, without doing any I/O.

The connection feeds whatever bytes arrived; :meth:`FrameReader.next_message` hands out one decoded
message at a time, so the owner can change ``dotu`` and ``msize`` after a Tversion before the next
frame is decoded. A size field below the header size or above msize is a remote protocol error
detected from the first four bytes, before the body is buffered.
"""

from __future__ import annotations

from .constants import HEADER_SIZE
from .errors import RemoteProtocolError
from .messages import Message, decode_frame


class FrameReader:
    def __init__(self, msize: int, dotu: bool = False) -> None:
        self.msize = msize
        self.dotu = dotu
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def next_message(self) -> Message | None:
        """The next complete message, or None until more bytes arrive."""
        frame = self.next_frame()
        return None if frame is None else decode_frame(*frame, self.dotu)

    def next_frame(self) -> tuple[bytearray, int, int] | None:
        """The next complete frame as (buffer, start, end), valid until the next feed; None until
        more bytes arrive. For a caller that answers some frames without decoding them."""
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < 4:
            return None
        size = int.from_bytes(buf[pos:pos + 4], "little")
        if size < HEADER_SIZE:
            raise RemoteProtocolError(f"frame size {size} is smaller than a 9P header")
        if size > self.msize:
            raise RemoteProtocolError(f"frame of {size} bytes exceeds the negotiated msize {self.msize}")
        if avail < size:
            return None
        self._pos = pos + size
        return buf, pos, pos + size

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos
