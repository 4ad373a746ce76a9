"""Fuzz the 9P decoder: any bytes must decode or raise RemoteProtocolError, never anything else.

Run:  python tests/fuzz/fuzz_decode.py -max_total_time=60     (``make fuzz`` installs atheris)

Each input's first byte picks the dialect (bit 0: 9P2000.u) and a chunk size (bits 1-7); the rest
is used twice: fed to a FrameReader in chunks as a raw stream, and decoded whole with decode_frame
after its size field is overwritten to match (so the fuzzer reaches the bodies, not just the size
check). Whatever decodes must re-encode to the very same bytes, decode(encode(m)) == m, and
survive the text form (text.parse(text.format(m)) == m). Any other exception, or a failed check,
is a finding.

With atheris (libFuzzer, coverage-guided) the arguments are libFuzzer's; when no corpus directory
is given, a temporary one is seeded with one valid frame of every message type in both dialects.
Without atheris the script falls back to a hypothesis-driven loop (random and mutated frames,
not coverage-guided) that honours ``-max_total_time=N`` and ``-runs=N`` and exits 1 on a finding.

The file name does not start with ``test_``, so pytest does not collect it.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))

try:
    import atheris
except ImportError:  # fall back to hypothesis below
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["brasil"]):
        from brasil.ninep import messages, text
        from brasil.ninep.errors import RemoteProtocolError
        from brasil.ninep.framing import FrameReader
else:
    from brasil.ninep import messages, text
    from brasil.ninep.errors import RemoteProtocolError
    from brasil.ninep.framing import FrameReader

MSIZE = 1 << 16


def check_message(msg: messages.Message, frame: bytes, dotu: bool) -> None:
    assert isinstance(msg, messages.Message), msg
    again = messages.encode(msg, dotu)
    assert again == frame, (msg, frame.hex(), again.hex())
    assert messages.decode_frame(again, dotu=dotu) == msg, msg
    assert text.parse(text.format(msg)) == msg, text.format(msg)


def one_input(data: bytes) -> None:
    if not data:
        return
    dotu = bool(data[0] & 1)
    chunk = (data[0] >> 1) + 1
    rest = data[1:]

    # 1. the bytes as a stream, in chunks of 1..128 bytes
    reader = FrameReader(msize=MSIZE, dotu=dotu)
    pos = 0
    try:
        for i in range(0, len(rest), chunk):
            reader.feed(rest[i:i + chunk])
            while (msg := reader.next_message()) is not None:
                size = int.from_bytes(rest[pos:pos + 4], "little")
                check_message(msg, rest[pos:pos + size], dotu)
                pos += size
    except RemoteProtocolError:
        pass

    # 2. the bytes as one frame whose size field is overwritten to be honest
    frame = struct.pack("<I", max(len(rest), 4)) + rest[4:]
    try:
        msg = messages.decode_frame(frame, dotu=dotu)
    except RemoteProtocolError:
        return
    check_message(msg, frame, dotu)


def seeds() -> list[bytes]:
    """One valid input per message type and dialect: the dialect byte, then the frame."""
    from brasil.ninep.wire import Qid, Stat

    q = Qid(0x80, 1, 2)
    st = Stat(1, 2, q, 0o644, 3, 4, 5, "name", "uid", "gid", "muid", "ext", 6, 7, 8)
    m = messages
    samples = [
        m.Tversion(0xFFFF, 8192, "9P2000.u"), m.Rversion(0xFFFF, 8192, "9P2000"),
        m.Tauth(1, 2, "u", "a", 3), m.Rauth(1, q), m.Tattach(1, 2, 3, "u", "a", 4), m.Rattach(1, q),
        m.Rerror(1, "e", 2), m.Tflush(1, 2), m.Rflush(1), m.Twalk(1, 2, 3, ("a", "bc")),
        m.Rwalk(1, (q, q)), m.Topen(1, 2, 3), m.Ropen(1, q, 4), m.Tcreate(1, 2, "n", 0o755, 1, "x"),
        m.Rcreate(1, q, 4), m.Tread(1, 2, 3, 4), m.Rread(1, b"data"), m.Twrite(1, 2, 3, b"data"),
        m.Rwrite(1, 4), m.Tclunk(1, 2), m.Rclunk(1), m.Tremove(1, 2), m.Rremove(1), m.Tstat(1, 2),
        m.Rstat(1, st), m.Twstat(1, 2, st), m.Rwstat(1),
    ]
    return [bytes([d]) + m.encode(x, bool(d)) for x in samples for d in (0, 1)]


def run_atheris() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):  # no corpus dir given: seed one
        corpus = tempfile.mkdtemp(prefix="brasil-fuzz-")
        for i, s in enumerate(seeds()):
            with open(os.path.join(corpus, f"seed{i:03d}"), "wb") as f:
                f.write(s)
        argv.append(corpus)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def run_hypothesis() -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hst

    limit, runs = 60.0, None
    for a in sys.argv[1:]:
        if a.startswith("-max_total_time="):
            limit = float(a.split("=", 1)[1])
        elif a.startswith("-runs="):
            runs = int(a.split("=", 1)[1])
    seed_inputs = seeds()

    def mutate(args: tuple[bytes, list[tuple[int, int]], int]) -> bytes:
        base, edits, cut = args
        buf = bytearray(base)
        for where, value in edits:
            buf[where % len(buf)] = value
        return bytes(buf[:len(buf) - cut % 8])

    inputs = hst.one_of(
        hst.binary(max_size=512),
        hst.tuples(hst.sampled_from(seed_inputs),
                   hst.lists(hst.tuples(hst.integers(0, 4096), hst.integers(0, 255)), max_size=6),
                   hst.integers(0, 7)).map(mutate),
    )
    batch = 2000

    @settings(max_examples=batch, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def fuzz(data: bytes) -> None:
        one_input(data)

    start, done = time.monotonic(), 0
    print(f"atheris not installed: hypothesis fallback for {limit:g} s", file=sys.stderr)
    try:
        while time.monotonic() - start < limit and (runs is None or done < runs):
            fuzz()
            done += batch
    except Exception:
        import traceback

        traceback.print_exc()
        print(f"FINDING after ~{done} inputs", file=sys.stderr)
        return 1
    print(f"done: ~{done} inputs in {time.monotonic() - start:.0f} s, no finding", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if atheris is not None:
        run_atheris()
    else:
        sys.exit(run_hypothesis())
