"""The two behaviours the engine emulates, named once."""
from __future__ import annotations

from typing import Tuple

TUTORIAL = "tutorial"   # 2.4/2.6 ip_conntrack (+ tcp-window-tracking), the iptables tutorial's
LINUX = "linux"         # a current kernel's nf_conntrack, as on this machine

PROFILES: Tuple[str, ...] = (TUTORIAL, LINUX)


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
    return profile


def is_modern(profile: str) -> bool:
    """nf_conntrack semantics (else ip_conntrack's)."""
    return profile == LINUX
