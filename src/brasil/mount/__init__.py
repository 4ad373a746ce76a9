"""`brasil mount`: a Brasil namespace as an ordinary directory, so unmodified programs drive it.

Theory of operation. ``brasil mount --at ADDR DIR`` forks a mount process that dials the daemon
(one 9P connection, 9P2000.u so that errors carry errno values) and then serves DIR through FUSE
(:mod:`brasil.mount.fuse`). In that process:

* one asyncio event loop, in a background thread, owns the :class:`~brasil.ninep.client.Client`;
  its requests are multiplexed by tag on the one connection;
* libfuse's worker threads run the FUSE callbacks; each one hands a coroutine to the loop
  (``asyncio.run_coroutine_threadsafe``) and waits for its result, so a callback blocked on a
  stream read (``cat DIR/csrv/local/0/stdio``) occupies one worker thread and one 9P tag, nothing
  more; libfuse starts more workers when all are busy;
* a FUSE path is a 9P path from the attach root: getattr is walk+stat, readdir reads the
  directory, open is walk+Topen and keeps the fid open in a table indexed by the FUSE file handle;
  read and write are one Tread or Twrite(s) at the kernel's offset, and release clunks;
* every file is opened with ``direct_io``: the kernel neither caches nor caps reads at the stat
  length (synthetic files have no meaningful length), a read returns what one Tread returned
  (streams deliver data as it arrives) and a 0-byte Rread is end of file; each write(2) becomes
  one Twrite, so ``echo "res 4" > DIR/csrv/local/0/ctl`` sends exactly one ctl command;
* ``O_TRUNC`` (shell redirection) becomes Topen's OTRUNC, or a wstat of length 0 when the kernel
  truncates separately; a failed ctl command fails the write(2) with the server's errno (EIO for a
  plain refusal), so the shell reports it;
* when the kernel interrupts a request (the reading program got a signal), the waiting worker
  cancels the coroutine, which sends Tflush: ``cat`` on an idle stream can be killed with ^C;
* attribute and entry caching are off (the namespace changes under the kernel: sessions come and
  go), the mounting user owns every file, and permission checks are left to the 9P server.

The parent returns only once the mount is live (or prints why it is not). ``brasil umount DIR``
runs ``fusermount3 -u DIR``; the mount process then closes its connection and exits.
"""
