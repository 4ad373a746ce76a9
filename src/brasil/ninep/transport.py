"""Addresses, listening and dialing: the one module that touches sockets.

Addresses are ``HOST:PORT``, ``unix:PATH``, or Plan 9 dial strings ``tcp!HOST!PORT`` and
``unix!PATH`` (SPEC.md §9); and ``KIND:NAME`` for a :class:`Fabric` registered under KIND, a
network held in memory (the simulator's ``sim:``, ``brasil.sim``), which listen and dial reach
through this same module, so the code above never learns it is not talking to sockets. Unix sockets are made mode 0600 in a directory only their owner can
enter, so the default local daemon is reachable by its user alone; and the server asks the kernel
who connected (:func:`peer_uid`), so a socket whose mode or directory was opened up still serves
its owner only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .private import UnsafePathError, check_ancestors, check_private_dir, private_dir

DEFAULT_PORT = 5670  # the original Brasil's port
STREAM_LIMIT = 1 << 20  # a byte stream's read buffer: above its frames, so reading never stalls


class AddressError(ValueError):
    pass


@dataclass(frozen=True)
class Address:
    kind: str  # "tcp", "unix", or a registered fabric's kind (the name in ``path``)
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix" or self.kind in FABRICS:
            return f"{self.kind}:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.kind == "unix" or self.kind in FABRICS:
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(text: str) -> Address:
    """Parse any accepted address form; the error says which forms exist."""
    t = text.strip()
    forms = "use HOST:PORT, unix:PATH, tcp!HOST!PORT or unix!PATH"
    if not t:
        raise AddressError(f"empty address; {forms}")
    kind, colon, name = t.partition(":")
    if colon and kind in FABRICS:
        if not name:
            raise AddressError(f"{text!r}: no name after {kind}:")
        return Address(kind, path=name)
    if t.startswith("unix:") or t.startswith("unix!"):
        path = t[5:]
        if not path:
            raise AddressError(f"{text!r}: no socket path; {forms}")
        return Address("unix", path=os.path.expanduser(path))
    if "!" in t:
        parts = t.split("!")
        if parts[0] not in ("tcp", "net") or len(parts) not in (2, 3):
            raise AddressError(f"{text!r}: not a dial string; {forms}")
        return Address("tcp", parts[1], _port(parts[2] if len(parts) == 3 else "", text))
    if t.startswith("/") or t.startswith("./"):
        return Address("unix", path=t)
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        return Address("tcp", host, _port(rest.lstrip(":"), text))
    if t.count(":") > 1:  # a bare IPv6 address, or a mistake
        try:
            ipaddress.IPv6Address(t)
        except ValueError:
            raise AddressError(f"{text!r} is not an address; {forms} (an IPv6 address with a "
                               "port is written [ADDR]:PORT)") from None
        return Address("tcp", t, DEFAULT_PORT)
    host, _, port = t.partition(":")
    return Address("tcp", host or "127.0.0.1", _port(port, text))


def _port(s: str, text: str) -> int:
    if not s:
        return DEFAULT_PORT
    try:
        port = int(s) if s.isdigit() else socket.getservbyname(s, "tcp")
    except OSError:
        raise AddressError(f"{text!r}: unknown port {s!r}") from None
    if not 0 <= port <= 65535:
        raise AddressError(f"{text!r}: port {port} out of range")
    return port


def runtime_dir() -> str:
    """Where sockets and local clusters go: ``$XDG_RUNTIME_DIR/brasil``, else
    ``/tmp/brasil-UID``. The name is predictable, so it is made and checked by
    :func:`~brasil.ninep.private.private_dir` before anything is put in it."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK):
        return os.path.join(base, "brasil")
    return tmp_dir()


def tmp_dir() -> str:
    """``/tmp/brasil-UID``: for what must outlive the login session (logind removes
    ``$XDG_RUNTIME_DIR`` when the user's last session ends), made and checked the same way."""
    return os.path.join("/tmp", f"brasil-{os.getuid()}")


def default_socket_path() -> str:
    return os.path.join(runtime_dir(), "brasil.sock")


def default_address() -> Address:
    """``$BRASIL``, else the local daemon's Unix socket."""
    env = os.environ.get("BRASIL")
    return parse_address(env) if env else Address("unix", path=default_socket_path())


ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class Fabric(Protocol):
    """A network in memory: what listen and dial do for its addresses. Its listeners have an
    attribute ``bound`` (the addresses they serve), as socket servers have sockets."""

    async def listen(self, address: Address, factory: ProtocolFactory) -> asyncio.AbstractServer:
        ...

    async def dial(self, address: Address, factory: ProtocolFactory
                   ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        """Raises ConnectionRefusedError when nobody listens there."""
        ...


# Address kinds served in memory, by kind: registered by whoever builds one (brasil.sim), for
# the process's lifetime. Only code in this process can add one.
FABRICS: dict[str, Fabric] = {}


async def listen(address: Address, factory: ProtocolFactory) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    if address.kind in FABRICS:
        return await FABRICS[address.kind].listen(address, factory)
    if address.kind == "unix":
        _prepare_unix_path(address.path)
        old = os.umask(0o177)  # 0600 from the start: no moment when others may connect
        try:
            server = await loop.create_unix_server(factory, address.path)
        finally:
            os.umask(old)
        os.chmod(address.path, 0o600)
        return server
    return await loop.create_server(factory, address.host, address.port, reuse_address=True)


def _prepare_unix_path(path: str) -> None:
    """The socket's directory must be ours alone (the runtime directory is made so); a stale
    socket of ours is replaced, anything else at the path is refused."""
    parent = os.path.dirname(os.path.abspath(path))
    if parent == runtime_dir():
        private_dir(parent, "runtime directory")
    else:
        check_ancestors(path)
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        raise UnsafePathError(f"{path} exists and is not a socket of yours; remove it or pick "
                              "another --listen address")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # stale: nobody listens on it
    else:
        raise OSError(f"{path}: a daemon is already listening there; stop it or pick "
                      "another --listen address")
    finally:
        probe.close()


def check_socket(path: str) -> None:
    """Before connecting to the default socket: it must be ours, in our private runtime
    directory, or it could be someone else's fake waiting for our commands."""
    if os.path.dirname(os.path.abspath(path)) == runtime_dir() and os.path.lexists(path):
        check_private_dir(os.path.dirname(os.path.abspath(path)), "runtime directory")
        if os.lstat(path).st_uid != os.geteuid():
            raise UnsafePathError(f"{path} is not your socket; someone else made it. Remove it "
                                  "and restart your daemon")


def bound_addresses(server: asyncio.AbstractServer) -> list[Address]:
    """The real addresses a listener got (the port chosen for port 0)."""
    bound = getattr(server, "bound", None)
    if bound is not None:  # a fabric's listener
        return list(bound)
    out = []
    for sock in getattr(server, "sockets", ()):
        if sock.family == socket.AF_UNIX:
            out.append(Address("unix", path=sock.getsockname()))
        else:
            host, port = sock.getsockname()[:2]
            out.append(Address("tcp", host, port))
    return out


async def dial(address: Address, factory: ProtocolFactory, timeout: float = 10.0
               ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    loop = asyncio.get_running_loop()
    try:
        if address.kind in FABRICS:
            coro = FABRICS[address.kind].dial(address, factory)
        elif address.kind == "unix":
            check_socket(address.path)
            coro = loop.create_unix_connection(factory, address.path)
        else:
            coro = loop.create_connection(factory, address.host, address.port)
        return await asyncio.wait_for(coro, timeout)
    except FileNotFoundError:
        raise ConnectionError(f"{address}: no daemon there (socket missing); start one with "
                              "`brasil serve` or pass --at ADDR") from None
    except ConnectionRefusedError:
        raise ConnectionError(f"{address}: connection refused; is `brasil serve` running there?"
                              ) from None
    except TimeoutError:
        raise ConnectionError(f"{address}: no answer within {timeout:g}s") from None
    except socket.gaierror as e:
        raise ConnectionError(f"{address}: cannot resolve host {address.host!r} ({e.strerror}); "
                              "check the name, or give an IP address") from None


_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(transport: asyncio.BaseTransport) -> int | None:
    """The uid of the process at the other end of a Unix socket, as the kernel saw it connect
    (SO_PEERCRED: not something the peer can claim); None for any other kind of socket."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    _UCRED.size))
    return int(uid)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None] | Any"]


async def serve_streams(host: str, handler: StreamHandler) -> tuple[asyncio.AbstractServer, Address]:
    """A TCP listener on an ephemeral port of ``host`` for a byte-stream protocol (splices);
    ``host`` may be a fabric's address (``sim:NAME``), served in memory."""
    kind, colon, _ = host.partition(":")
    if colon and kind in FABRICS:
        loop = asyncio.get_running_loop()
        address = parse_address(host)

        def stream_protocol() -> asyncio.BaseProtocol:
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(STREAM_LIMIT, loop),
                                                handler, loop=loop)
        fabric_server = await FABRICS[kind].listen(address, stream_protocol)
        return fabric_server, address
    server = await asyncio.start_server(handler, host, 0, limit=STREAM_LIMIT)
    return server, bound_addresses(server)[0]


async def open_stream(address: Address, timeout: float = 10.0
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if address.kind in FABRICS:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(STREAM_LIMIT, loop)
        transport, protocol = await dial(address, lambda: asyncio.StreamReaderProtocol(
            reader, loop=loop), timeout)
        assert isinstance(transport, asyncio.WriteTransport)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
    try:
        return await asyncio.wait_for(asyncio.open_connection(address.host, address.port,
                                                              limit=STREAM_LIMIT), timeout)
    except (TimeoutError, OSError) as e:
        raise ConnectionError(f"{address}: cannot connect: {e or 'timed out'}") from None
