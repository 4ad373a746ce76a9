"""Cluster-secret authentication through 9P's afid, as the protocol intends (attach(5)).

After Tauth the client reads a challenge from the afid, writes back an HMAC-SHA256 of it keyed by
the shared secret, together with a challenge of its own, and reads the server's proof in turn: both
sides learn that the other holds the secret, and the secret itself never crosses the wire. Tattach
then names the afid; the server lets it through only if that exchange succeeded.

    server → "brasil-hmac-sha256 NONCE_S\\n"
    client → "HMAC(secret, 'client' NONCE_S uname aname) NONCE_C\\n"
    server → "HMAC(secret, 'server' NONCE_C NONCE_S)\\n"     (or Rerror: authentication failed)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from typing import TYPE_CHECKING, Any

from .constants import QTAUTH
from .errors import Eauth, NinepError
from .private import UnsafePathError, check_private_dir, private_dir, read_private, write_private
from .ratelimit import RateLimited
from .synthetic import Handle, Inode
from .wire import Qid

if TYPE_CHECKING:
    from .client import AuthFn, Client

log = logging.getLogger("brasil.auth")
limited = RateLimited(log)
SCHEME = "brasil-hmac-sha256"


class SecretError(ValueError):
    pass


def load_secret(path: str) -> bytes:
    """Read a secret file: a regular file of ours that nobody else can read (a secret someone
    else could read, or swap for their own through a link, would give them the cluster)."""
    try:
        secret = read_private(os.path.expanduser(path), "secret file").strip()
    except UnsafePathError as e:
        raise SecretError(str(e)) from None
    except OSError as e:
        raise SecretError(f"secret file {path}: {e.strerror}") from None
    if len(secret) < 16:
        raise SecretError(f"secret file {path}: at least 16 bytes are needed "
                          "(make one with: head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE)")
    return secret


def make_secret() -> str:
    """A fresh cluster secret, as the text a secret file holds."""
    return secrets.token_urlsafe(32) + "\n"


def default_secret_path() -> str:
    """Where `brasil serve` keeps the secret it made for itself (no --secret-file given), and
    where clients of this user look for it: next to the default socket, in the private runtime
    directory."""
    from .transport import runtime_dir
    return os.path.join(runtime_dir(), "secret")


def own_secret() -> tuple[str, bool]:
    """The default secret file, made (0600, in the private runtime directory) if there is none
    yet; returns its path and whether it was made now. Daemons of one user on one machine share
    it, so a child started the same way joins its parent without being told the secret."""
    from .transport import runtime_dir
    private_dir(runtime_dir(), "runtime directory")
    path = default_secret_path()
    made = write_private(path, make_secret(), replace=False)
    load_secret(path)  # ours, private, long enough: else refused with the reason
    return path, made


def secret_file_for(address: Any, given: str | None) -> str | None:
    """The secret file a client uses for ``address``: the one given, else
    ``$BRASIL_SECRET_FILE``, else, for a TCP address, the default secret of ours if there is one
    (a Unix socket needs no secret: it is the owner's alone)."""
    chosen = given or os.environ.get("BRASIL_SECRET_FILE") or None
    if chosen or getattr(address, "kind", "tcp") != "tcp":
        return chosen
    path = default_secret_path()
    if not os.path.lexists(path):
        return None
    try:
        check_private_dir(os.path.dirname(path), "runtime directory")
    except UnsafePathError as e:
        raise SecretError(str(e)) from None
    return path


def _mac(secret: bytes, *parts: str) -> str:
    return hmac.new(secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()


class AuthFile(Inode):
    def __init__(self, secret: bytes, uname: str, aname: str, peer: str) -> None:
        super().__init__("auth", 0o600)
        self.qid = Qid(QTAUTH, 0, self.qid.path)
        self.secret, self.uname, self.aname, self.peer = secret, uname, aname, peer
        self.nonce = secrets.token_hex(16)
        self.proof = ""
        self.ok = False

    def open(self, mode: int) -> Handle:
        return AuthHandle(self)


class AuthHandle(Handle):
    node: AuthFile

    def read(self, offset: int, count: int) -> bytes:
        n = self.node
        text = f"{n.proof}\n" if n.proof else f"{SCHEME} {n.nonce}\n"
        return text.encode()[offset:offset + count]

    def write(self, offset: int, data: bytes) -> int:
        n = self.node
        words = data.decode("ascii", "replace").split()
        expected = _mac(n.secret, "client", n.nonce, n.uname, n.aname)
        if len(words) != 2 or not hmac.compare_digest(words[0], expected):
            limited.warning("wrong secret", "authentication failed for %r from %s: wrong secret",
                            n.uname[:64], n.peer)
            raise NinepError(*Eauth)
        n.ok = True
        n.proof = _mac(n.secret, "server", words[1], n.nonce)
        return len(data)


class SecretAuthenticator:
    """The server side: plugs into ``Server(authenticator=…)``."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def auth_node(self, uname: str, aname: str, peer: str = "?") -> Inode:
        return AuthFile(self.secret, uname, aname, peer)

    def may_attach(self, auth: Inode, uname: str, aname: str) -> bool:
        return (isinstance(auth, AuthFile) and auth.ok and auth.uname == uname
                and auth.aname == aname)


def client_auth(secret: bytes) -> AuthFn:
    """The client side, for ``Client.connect(auth=client_auth(secret))``."""
    from .messages import Tread, Twrite

    async def authenticate(client: Client, afid: int) -> None:
        challenge = (await client.rpc(Tread, afid, 0, 256)).data.decode().split()
        if len(challenge) != 2 or challenge[0] != SCHEME:
            raise NinepError(f"server offers authentication {' '.join(challenge)[:40]!r}, "
                             f"not {SCHEME}")
        mine = secrets.token_hex(16)
        answer = _mac(secret, "client", challenge[1], client.uname, client.aname)
        await client.rpc(Twrite, afid, 0, f"{answer} {mine}\n".encode())
        proof = (await client.rpc(Tread, afid, 0, 256)).data.decode().strip()
        if not hmac.compare_digest(proof, _mac(secret, "server", mine, challenge[1])):
            raise NinepError("the server could not prove it knows the cluster secret")
    return authenticate


async def dial(at: str | None = None, secret_file: str | None = None, **kw: Any) -> Client:
    """The client every command and tool uses: ``at`` (else ``$BRASIL``, else the local
    daemon's socket), with the cluster secret from ``secret_file`` (else
    ``$BRASIL_SECRET_FILE``, else our default one for TCP: :func:`secret_file_for`) when there
    is one; a refused attach says what to do about it."""
    from .client import Client
    from .transport import default_address, parse_address
    addr = parse_address(at) if at else default_address()
    given = secret_file or os.environ.get("BRASIL_SECRET_FILE")
    secret_file = secret_file_for(addr, given)
    auth = client_auth(load_secret(secret_file)) if secret_file else None
    try:
        return await Client.connect(addr, auth=auth, **kw)
    except NinepError as e:
        if e.message != Eauth[0]:
            raise
        if secret_file == default_secret_path() and secret_file != given:
            hint = (f"the daemon at {addr} requires its cluster secret, and your default one "
                    f"({secret_file}) is not it: pass --secret-file FILE or set BRASIL_SECRET_FILE")
        elif secret_file:
            hint = f"the secret in {secret_file} is not the one the daemon at {addr} was given"
        else:
            hint = (f"the daemon at {addr} requires the cluster secret: pass --secret-file FILE "
                    "or set BRASIL_SECRET_FILE")
        raise NinepError(f"{e.message}: {hint}", e.errno) from None
