"""The errors every command shares."""
from __future__ import annotations


class UsageError(Exception):
    """A bad command-line argument: printed as one line (`procfs-ct CMD: message`),
    exit status 2, nothing started."""
