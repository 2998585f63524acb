"""One import point for the FUSE binding: mfusepy when installed, else fusepy.

mfusepy is the maintained fork (survives a callback raising SystemExit, supports
libfuse3); fusepy 3.0.1 is the library the design names.  procfs_ct stays inside the
API both share (docs/spec/fuse.md §2): Operations subclass, FUSE(ops, mnt, **options),
FuseOSError, fuse_get_context, use_ns.  PROCFS_CT_FUSE=fusepy forces the fallback, so
CI can run the suite against both.
"""
from __future__ import annotations

import ctypes
import os
import threading

_WANTED = os.environ.get("PROCFS_CT_FUSE", "mfusepy")

if _WANTED == "fusepy":
    import fuse as _lib                    # fusepy installs the module "fuse"
    LIBRARY = "fusepy"
else:
    try:
        import mfusepy as _lib
        LIBRARY = "mfusepy"
    except ImportError:
        import fuse as _lib
        LIBRARY = "fusepy"

FUSE = _lib.FUSE
FuseOSError = _lib.FuseOSError
Operations = _lib.Operations
fuse_get_context = _lib.fuse_get_context
# fusepy only speaks libfuse 2; mfusepy says which one it loaded.
LIBFUSE_MAJOR = getattr(_lib, "fuse_version_major", 2)


# libfuse's worker threads are not Python threads: ctypes gives each callback on one a
# Python thread state of its own, made by PyGILState_Ensure before the call and deleted by
# PyGILState_Release after it (the deletion with the GIL held).  A bare callback from such
# a thread cost 8.6-10.3 us of CPU so, 0.2-0.4 us with its state kept; on an idle mount,
# per request, libfuse's read to our code went from 80-94 to 38-53 us and our return to
# the reply from 17-28 to 3-5 us, and a knob write is two requests: its median 0.50-0.61
# ms -> 0.42-0.49 ms idle, 0.96-1.23 -> 0.54-0.82 ms at 50,000 packets/s (load 6-7; in
# turns, bench/RESULTS.md round 9).  One more Ensure,
# never released, keeps the thread's state for the thread's life, so later callbacks on
# it only take the GIL.  A worker that libfuse ends (more than 10 idle) leaves its state
# behind until the daemon exits: a few hundred bytes, once per such thread.
_ENSURE = ctypes.pythonapi.PyGILState_Ensure
_KEPT = threading.local()           # lives in the thread state: set once it is kept


def keep_thread_state() -> None:
    """Keep the calling thread's Python thread state after this callback returns (see
    above); cheap after the first call on a thread."""
    if not getattr(_KEPT, "kept", False):
        _ENSURE()
        _KEPT.kept = True


__all__ = ["FUSE", "FuseOSError", "Operations", "fuse_get_context", "LIBRARY", "LIBFUSE_MAJOR",
           "keep_thread_state"]
