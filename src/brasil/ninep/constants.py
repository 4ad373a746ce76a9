"""Numbers fixed by the 9P2000 manual (intro(5)) and the 9P2000.u extensions."""

from __future__ import annotations

VERSION = "9P2000"
VERSION_U = "9P2000.u"
VERSION_UNKNOWN = "unknown"

NOTAG = 0xFFFF
NOFID = 0xFFFFFFFF
NONUNAME = 0xFFFFFFFF  # 9P2000.u: "no numeric uid"
MAXWELEM = 16  # most names a single Twalk may carry
IOHDRSZ = 24  # room an Rread/Twrite header takes; iounit = msize - IOHDRSZ
HEADER_SIZE = 7  # size[4] type[1] tag[2]
MIN_MSIZE = 256  # smallest msize we accept: it must hold a stat and an error

# qid.type bits
QTDIR = 0x80
QTAPPEND = 0x40
QTEXCL = 0x20
QTMOUNT = 0x10
QTAUTH = 0x08
QTTMP = 0x04
QTSYMLINK = 0x02
QTFILE = 0x00

# stat.mode bits
DMDIR = 0x80000000
DMAPPEND = 0x40000000
DMEXCL = 0x20000000
DMMOUNT = 0x10000000
DMAUTH = 0x08000000
DMTMP = 0x04000000
DMSYMLINK = 0x02000000  # 9P2000.u
DMDEVICE = 0x00800000  # 9P2000.u
DMNAMEDPIPE = 0x00200000  # 9P2000.u
DMSOCKET = 0x00100000  # 9P2000.u
DMSETUID = 0x00080000  # 9P2000.u
DMSETGID = 0x00040000  # 9P2000.u

# Topen/Tcreate modes
OREAD = 0
OWRITE = 1
ORDWR = 2
OEXEC = 3
OTRUNC = 0x10
ORCLOSE = 0x40
