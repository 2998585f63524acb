"""One import point for the FUSE binding: mfusepy when installed, else fusepy.

mfusepy is the maintained fork (survives a callback raising SystemExit, supports
libfuse3); fusepy 3.0.1 is the library the design names.  procfs_ct stays inside the
API both share (docs/spec/fuse.md §2): Operations subclass, FUSE(ops, mnt, **options),
FuseOSError, fuse_get_context, use_ns.  PROCFS_CT_FUSE=fusepy forces the fallback, so
CI can run the suite against both.
"""
from __future__ import annotations

import os

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

__all__ = ["FUSE", "FuseOSError", "Operations", "fuse_get_context", "LIBRARY", "LIBFUSE_MAJOR"]
