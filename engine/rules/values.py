"""Argument parsers and printers shared by the rule parts: addresses, ports, marks, names.

Each parser raises RulesError with the message iptables gives for the same argument.
"""
from __future__ import annotations

from .errors import RulesError
from .names import PROTOCOL_NAMES, PROTOCOL_NUMBERS
from .services import SERVICE_PORTS

ALL_ONES = 0xFFFFFFFF


def parse_ipv4(text: str, is_mask: bool = False) -> int:
    """A dotted quad as an int in host byte order.  An address may stop early: the bytes
    left out are 0 (`0/0`, `10/8`), as libxtables' __numeric_to_ipaddr completes a
    network address; a mask may not."""
    parts = text.split(".")
    if not is_mask and 1 <= len(parts) < 4:
        parts += ["0"] * (4 - len(parts))
    if len(parts) != 4 or not all(p.isdigit() and int(p) <= 255 for p in parts):
        raise RulesError(f"host/network `{text}' not found")
    a, b, c, d = (int(p) for p in parts)
    return a << 24 | b << 16 | c << 8 | d


def ipv4_text(addr: int) -> str:
    return f"{addr >> 24}.{addr >> 16 & 255}.{addr >> 8 & 255}.{addr & 255}"


def prefix_mask(bits: int) -> int:
    return (ALL_ONES << (32 - bits)) & ALL_ONES


def parse_address(text: str, masked: bool = True) -> tuple[int, int]:
    """'ADDR[/BITS|/MASK]' -> (address, mask). -s/-d store the address masked; conntrack's
    --ctorigsrc and friends keep it as given (and mask both sides when matching)."""
    addr_text, _, mask_text = text.partition("/")
    if not mask_text:
        mask = ALL_ONES
    elif mask_text.isdigit():
        if int(mask_text) > 32:
            raise RulesError(f"invalid mask `{mask_text}' specified")
        mask = prefix_mask(int(mask_text))
    else:
        try:
            mask = parse_ipv4(mask_text, is_mask=True)
        except RulesError:
            raise RulesError(f"invalid mask `{mask_text}' specified") from None
    addr = parse_ipv4(addr_text)
    return (addr & mask if masked else addr), mask


def parse_address_list(text: str) -> list[tuple[int, int]]:
    """-s/-d take several comma-separated addresses: one rule each, as iptables expands them."""
    return [parse_address(part) for part in text.split(",")]


def mask_bits(mask: int) -> int:
    """The prefix length of a contiguous mask, -1 for a non-contiguous one."""
    bits = bin(mask).count("1")
    return bits if prefix_mask(bits) == mask else -1


def address_text(addr: int, mask: int) -> str:
    """ADDR/BITS, or ADDR/DOTTED-MASK when the mask is not contiguous (xtables_ipmask_to_numeric)."""
    bits = mask_bits(mask)
    return f"{ipv4_text(addr)}/{bits}" if bits >= 0 else f"{ipv4_text(addr)}/{ipv4_text(mask)}"


def parse_port(text: str, proto: str = "") -> int:
    """A port number or a service name of `proto` ("tcp", "udp"; "" for either)."""
    if text.isdigit() and int(text) <= 0xFFFF:
        return int(text)
    for table in ([SERVICE_PORTS[proto]] if proto in SERVICE_PORTS else SERVICE_PORTS.values()):
        if text in table:
            return table[text]
    raise RulesError(f"invalid port/service `{text}' specified")


def parse_port_range(text: str, proto: str = "") -> tuple[int, int]:
    """'P', 'A:B', 'A:' (to 65535) or ':B' (from 0)."""
    low, sep, high = text.partition(":")
    if not sep:
        port = parse_port(text, proto)
        return port, port
    first = parse_port(low, proto) if low else 0
    last = parse_port(high, proto) if high else 0xFFFF
    if first > last:
        raise RulesError("invalid portrange (min > max)")
    return first, last


def port_range_text(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}:{last}"


def parse_protocol(text: str) -> int:
    name = text.lower()     # iptables lowercases -p's argument before looking it up
    if name.isdigit():
        if int(name) > 255:
            raise RulesError(f"unknown protocol \"{text}\" specified")
        return int(name)
    if name in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[name]
    raise RulesError(f"unknown protocol \"{text}\" specified")


def protocol_text(proto: int) -> str:
    return PROTOCOL_NAMES.get(proto, str(proto))


def parse_u32(text: str, what: str) -> int:
    """An unsigned 32-bit number as strtoul(.., 0) reads it (0x hex, 0 octal)."""
    try:
        value = int(text, 0) if not (len(text) > 1 and text[0] == "0" and text[1].isdigit()) \
            else int(text, 8)
    except ValueError:
        raise RulesError(f"Bad {what} value \"{text}\"") from None
    if not 0 <= value <= ALL_ONES:
        raise RulesError(f"Bad {what} value \"{text}\"")
    return value


def parse_mark(text: str, what: str = "mark") -> tuple[int, int]:
    """'VALUE[/MASK]' -> (value, mask); the mask defaults to all ones."""
    value_text, sep, mask_text = text.partition("/")
    value = parse_u32(value_text, what)
    mask = parse_u32(mask_text, what) if sep else ALL_ONES
    return value, mask


def mark_text(value: int, mask: int) -> str:
    """0xV, or 0xV/0xM when the mask is not all ones (libxt_mark's print_mark)."""
    return f"0x{value:x}" if mask == ALL_ONES else f"0x{value:x}/0x{mask:x}"


# Characters xtables_save_string leaves unquoted; with any other, the string is quoted.
_PLAIN = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ESCAPED = "\"\\'"


def saved_string(value: str) -> str:
    """A string argument as iptables-save prints it (xtables_save_string), with its leading space."""
    if value and all(ch in _PLAIN for ch in value):
        return " " + value
    return ' "' + "".join("\\" + ch if ch in _ESCAPED else ch for ch in value) + '"'
