"""xt_limit's token bucket, in the kernel's units, on a clock the caller passes in.

The rate is stored as iptables stores it: `avg` = XT_LIMIT_SCALE * seconds / packets
(the period of one packet in 1/10000 s). The kernel turns it into credits per jiffy:
credits refill by CREDITS_PER_JIFFY every jiffy, a packet costs user2credits(avg), the
bucket holds user2credits(avg * burst). Jiffies come from the caller's seconds at HZ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from engine.knobs import HZ

from .errors import RulesError

XT_LIMIT_SCALE = 10000
DEFAULT_AVG = XT_LIMIT_SCALE * 3600 // 3      # 3/hour
DEFAULT_BURST = 5
_U32 = 0xFFFFFFFF


def _pow2_below32(value: int) -> int:
    """POW2_BELOW32(x): the highest power of two not above x."""
    return 1 << (value.bit_length() - 1)


MAX_CPJ = _U32 // (HZ * 60 * 60 * 24)
CREDITS_PER_JIFFY = _pow2_below32(MAX_CPJ)

# (unit name as printed, seconds), largest first, as libxt_limit's rates[] table.
RATE_UNITS = (("day", 86400), ("hour", 3600), ("min", 60), ("sec", 1))
_UNIT_WORDS = (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400))


def user2credits(user: int) -> int:
    if user > _U32 // (HZ * CREDITS_PER_JIFFY):
        return (user // XT_LIMIT_SCALE) * HZ * CREDITS_PER_JIFFY      # divide first
    return (user * HZ * CREDITS_PER_JIFFY) // XT_LIMIT_SCALE


def parse_rate(text: str) -> int:
    """'N[/second|minute|hour|day]' (any prefix of the unit) -> avg, as libxt_limit's parse_rate."""
    number, sep, unit = text.partition("/")
    mult = 1
    if sep:
        matched = [m for word, m in _UNIT_WORDS if unit and word.startswith(unit.lower())]
        if not matched:
            raise RulesError(f"bad rate \"{text}\"'")
        mult = matched[0]
    digits = len(number) - len(number.lstrip("0123456789"))
    count = int(number[:digits]) if digits else 0         # atoi: leading digits only
    if count == 0:
        raise RulesError(f"bad rate \"{text}\"'")
    avg = XT_LIMIT_SCALE * mult // count
    if avg == 0:
        raise RulesError(f"Rate too fast \"{text}\"")
    return avg


def rate_text(avg: int) -> str:
    """The rate as iptables prints it (libxt_limit's print_rate): the largest exact unit."""
    if avg == 0:
        return f"{math.inf:f}"
    chosen = 0
    for i in range(1, len(RATE_UNITS)):
        mult = RATE_UNITS[i][1] * XT_LIMIT_SCALE
        if avg > mult or mult // avg < mult % avg:
            break
        chosen = i
    name, seconds = RATE_UNITS[chosen]
    return f"{seconds * XT_LIMIT_SCALE // avg}/{name}"


def check_burst(avg: int, burst: int) -> None:
    """limit_mt_check: the bucket must not overflow the credit arithmetic."""
    if burst == 0 or user2credits(avg * burst) < user2credits(avg):
        raise RulesError(f"Overflow, try lower: {avg}/{burst}", exit_code=1)


@dataclass
class TokenBucket:
    """One rule's bucket (the kernel keeps one per rule, made fresh at every load)."""
    avg: int
    burst: int
    credit: int = 0
    prev: Optional[int] = None       # jiffies of the last look; None until the first packet

    def __post_init__(self) -> None:
        self.cost = user2credits(self.avg)
        self.credit_cap = user2credits(self.avg * self.burst)
        self.credit = self.credit_cap                     # full at load

    def allow(self, now: float) -> bool:
        jiffies = int(now * HZ)
        if self.prev is None:
            # The kernel stamps prev at load; the bucket is full then and capped, so
            # stamping it at the first packet gives the same credit.
            self.prev = jiffies
        self.credit += (jiffies - self.prev) * CREDITS_PER_JIFFY
        self.prev = jiffies
        if self.credit > self.credit_cap:
            self.credit = self.credit_cap
        if self.credit >= self.cost:
            self.credit -= self.cost
            return True
        return False
