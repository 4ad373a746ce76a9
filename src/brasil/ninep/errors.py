"""Protocol errors and the Plan 9 error strings the server answers with.

Two families, kept apart as h11 does: a *protocol* error means bytes on the wire were wrong (the
peer's: :class:`RemoteProtocolError`, which closes the connection; or ours: :class:`LocalProtocolError`,
a bug in the caller), while :class:`NinepError` is an ordinary failed request, carried by Rerror, that
leaves the connection healthy. Only the server turns exceptions into Rerror; everything else raises
these with one of the E-strings below so that clients see the same words for the same failure.
"""

from __future__ import annotations

import errno as _errno


class ProtocolError(Exception):
    """The 9P byte stream itself is wrong."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a malformed or oversized message: close that connection, nothing more."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something 9P cannot carry (a string too long, a number out of range)."""


class NinepError(Exception):
    """A request failed; travels as Rerror (with an errno for 9P2000.u clients)."""

    def __init__(self, message: str, errno: int = _errno.EIO) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno

    def __str__(self) -> str:
        return self.message


def _e(message: str, errno: int) -> tuple[str, int]:
    return message, errno


# The E-names: (Plan 9 string, errno for 9P2000.u). Raise with ``NinepError(*Ebadfid)``.
Ebadfid = _e("unknown fid", _errno.EBADF)
Efidinuse = _e("fid already in use", _errno.EBADF)
Etoomanyfids = _e("too many fids open on this connection; clunk some", _errno.EMFILE)
Etoomanyfidsall = _e("too many fids open on this server; clunk some, or ask its owner to raise "
                     "serve --max-fids", _errno.EMFILE)
Etoomanyfidsnet = _e("too many fids open on this server over the network (the rest is kept for its "
                     "owner's socket); clunk some, or ask its owner to raise serve --max-fids",
                     _errno.EMFILE)
Etoomanyfidspeer = _e("too many fids open from your address (its share of this server's); clunk "
                      "some, or close other connections", _errno.EMFILE)
Etoomanyreqs = _e("too many requests in flight on this connection; wait for replies", _errno.EAGAIN)
Enotfound = _e("file does not exist", _errno.ENOENT)
Eexist = _e("file already exists", _errno.EEXIST)
Eperm = _e("permission denied", _errno.EACCES)
Enotdir = _e("not a directory", _errno.ENOTDIR)
Eisdir = _e("is a directory", _errno.EISDIR)
Ewalknodir = _e("walk in non-directory", _errno.ENOTDIR)
Eopen = _e("fid already open", _errno.EBADF)
Ewalkopen = _e("cannot walk an open fid", _errno.EBADF)
Enotopen = _e("fid not open", _errno.EBADF)
Ebadmode = _e("open mode not allowed for this fid", _errno.EBADF)
Enocreate = _e("create prohibited in this directory", _errno.EACCES)
Enoremove = _e("remove prohibited", _errno.EACCES)
Enowstat = _e("wstat prohibited", _errno.EACCES)
Ebadoffset = _e("bad offset in directory read", _errno.EINVAL)
Ecount = _e("read count too small for a directory entry", _errno.EINVAL)
Ebadname = _e("bad file name", _errno.EINVAL)
Enoauth = _e("authentication not required", _errno.EINVAL)
Eauth = _e("authentication failed", _errno.EACCES)
Enotattached = _e("not attached: Tversion then Tattach first", _errno.EINVAL)
Eversion = _e("Tversion first", _errno.EINVAL)
Ebadmsg = _e("message not allowed from a client", _errno.EINVAL)
Einterrupted = _e("interrupted", _errno.EINTR)
Ehungup = _e("i/o on hungup channel", _errno.EPIPE)
Einternal = _e("internal error", _errno.EIO)
