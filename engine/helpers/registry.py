"""The helpers, as data: name, protocol, the server port they are registered for, and
their expectation policy (nf_conntrack_expect_policy: max_expected, timeout seconds).

The tutorial profile attaches a helper to every new connection to its port (2.4/2.6 with
ip_conntrack_ftp & co. loaded); the linux profile only where a rule says so
(`-t raw ... -j CT --helper NAME`), as kernels since 6.0 do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from ..packet import IPPROTO_TCP, IPPROTO_UDP
from . import ftp, irc, tftp
from .call import HelpCall


@dataclass(frozen=True)
class Helper:
    name: str
    proto: int
    port: int
    max_expected: int            # per master and class; 0 = no limit
    timeout: int                 # seconds an expectation waits
    help: Callable[[HelpCall], bool]
    new_state: Callable[[], Any] = lambda: None


HELPERS: Tuple[Helper, ...] = (
    Helper("ftp", IPPROTO_TCP, 21, max_expected=1, timeout=5 * 60, help=ftp.help,
           new_state=ftp.new_state),
    Helper("tftp", IPPROTO_UDP, 69, max_expected=1, timeout=5 * 60, help=tftp.help),
    # irc's module parameters max_dcc_channels=8, dcc_timeout=300.
    Helper("irc", IPPROTO_TCP, 6667, max_expected=8, timeout=300, help=irc.help),
)
BY_NAME: Dict[str, Helper] = {h.name: h for h in HELPERS}
BY_PORT: Dict[Tuple[int, int], Helper] = {(h.proto, h.port): h for h in HELPERS}


def helper_named(name: str) -> Optional[Helper]:
    return BY_NAME.get(name)


def helper_for_port(proto: int, port: int) -> Optional[Helper]:
    """The helper registered for connections to this server port, if any."""
    return BY_PORT.get((proto, port))
