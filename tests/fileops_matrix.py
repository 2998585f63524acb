"""The cases of the kernel file-operation comparison (tests/test_fileops_kernel.py).

Each case is run by tests/fileprobe.py twice: on the kernel's file (in a network
namespace) and on the same knob's file in a procfs-ct mount of the linux profile.  The
matrix covers every case class without being a full cross product:

  * values: every knob below x ~45 values (valid, the range's bounds and bounds +-1, hex,
    octal, signs, blanks, garbage, overflow, 20/21-character numbers, 4095/4096/4097-byte
    writes, empty), written once on O_WRONLY;
  * open modes x write patterns: every knob x 6 open modes x 12 patterns (one write, two
    writes, a partial write and the rest, pwrite at an offset, lseek then write, write,
    lseek(0), write, write then read, a refused write then a good one, write then fstat,
    ftruncate, fsync);
  * reads: every knob and listing x reads at each offset, small reads in a row, lseek,
    sendfile, copy_file_range, shutil.copyfile, mmap private and shared, O_DIRECT.

Values come from the registry (engine.knobs): its bounds are what the kernel is asked about.

`python3 tests/fileops_matrix.py MNT NAMESPACE` runs the matrix on any mount (of the linux
profile, say one of an older commit) against the kernel in an existing namespace and
prints how many cases are identical, by class.
"""
from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

if __name__ == "__main__":                    # run as a script: the checkout's engine
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.knobs import KIND_LIMITS, KNOBS_BY_PATH, WRITE_WINDOW, Knob

PROFILE = "linux"
PROBE = str(Path(__file__).resolve().parent / "fileprobe.py")

# Our file -> the kernel's file (relative to /proc).  Every handler kind and range of the
# linux profile, and every alias generation once (ip_ct_*, ip_conntrack_*, modern,
# sys/net/ipv4).  nf_conntrack_max and expect_max are left out: a network namespace
# serves them read-only (0444), and the initial namespace's are not ours to change.
KNOB_FILES: Dict[str, str] = {
    "sys/net/netfilter/nf_conntrack_generic_timeout": "sys/net/netfilter/nf_conntrack_generic_timeout",
    "sys/net/ipv4/netfilter/ip_ct_udp_timeout": "sys/net/netfilter/nf_conntrack_udp_timeout",
    "sys/net/ipv4/netfilter/ip_conntrack_tcp_timeout_close": "sys/net/netfilter/nf_conntrack_tcp_timeout_close",
    "sys/net/ipv4/ipfrag_time": "sys/net/ipv4/ipfrag_time",
    "sys/net/netfilter/nf_conntrack_tcp_loose": "sys/net/netfilter/nf_conntrack_tcp_loose",
    "sys/net/ipv4/netfilter/ip_conntrack_checksum": "sys/net/netfilter/nf_conntrack_checksum",
    "sys/net/netfilter/nf_conntrack_events": "sys/net/netfilter/nf_conntrack_events",
    "sys/net/netfilter/nf_conntrack_log_invalid": "sys/net/netfilter/nf_conntrack_log_invalid",
    "sys/net/ipv4/netfilter/ip_ct_tcp_max_retrans": "sys/net/netfilter/nf_conntrack_tcp_max_retrans",
    "sys/net/ipv4/ipfrag_max_dist": "sys/net/ipv4/ipfrag_max_dist",
    "sys/net/ipv4/ipfrag_high_thresh": "sys/net/ipv4/ipfrag_high_thresh",
    "sys/net/ipv4/ipfrag_low_thresh": "sys/net/ipv4/ipfrag_low_thresh",
    "sys/net/netfilter/nf_conntrack_frag6_high_thresh": "sys/net/netfilter/nf_conntrack_frag6_high_thresh",
    "sys/net/netfilter/nf_conntrack_frag6_low_thresh": "sys/net/netfilter/nf_conntrack_frag6_low_thresh",
    "sys/net/netfilter/nf_conntrack_count": "sys/net/netfilter/nf_conntrack_count",
    "sys/net/ipv4/netfilter/ip_conntrack_buckets": "sys/net/netfilter/nf_conntrack_buckets",
}
# Listings whose text is the same in a fresh namespace and an idle mount.
LISTING_FILES: Dict[str, str] = {
    "net/stat/nf_conntrack": "net/stat/nf_conntrack",
    "net/nf_conntrack": "net/nf_conntrack",
    "net/nf_conntrack_expect": "net/nf_conntrack_expect",
}

# Values every knob is written with, whatever its range.
COMMON_VALUES: Tuple[str, ...] = (
    "", "\n", " ", "abc", "+1", "- 1", "1.5", "1abc", "0x", "0xg", "0x10", "0X1F", "010", "08",
    "-0", "-1", " 1", "1 ", "\t1\n", "1\n0\n", "1 abc", "1\x00", "0 0",
    "000000000000000000001", "00000000000000000001", "-00000000000000000001",
    "-0000000000000000001", "18446744073709551615", "18446744073709551616",
    "99999999999999999999999", "4294967295", "4294967296", "2147483647", "2147483648",
    "-2147483648", "-2147483649",
    # the write window: the kernel looks at the first 4095 bytes of a write
    " " * (WRITE_WINDOW - 1) + "1", " " * WRITE_WINDOW + "1", " " * (WRITE_WINDOW + 1) + "1",
    "1" + " " * WRITE_WINDOW, "1" + " " * (WRITE_WINDOW + 1), " " * (WRITE_WINDOW - 2) + "123",
)

OPEN_MODES: Tuple[Tuple[str, ...], ...] = (
    ("O_WRONLY",), ("O_RDWR",), ("O_WRONLY", "O_APPEND"), ("O_WRONLY", "O_TRUNC"),
    ("O_WRONLY", "O_DIRECT"), ("O_RDWR", "O_APPEND"),
)


def _hex(text: str) -> str:
    return text.encode("latin-1").hex()


def defaults() -> Dict[str, int]:
    return {knob.name: knob.default(PROFILE) for knob in KNOBS_BY_PATH.values()
            if knob.default(PROFILE) is not None}


def effective_range(knob: Knob) -> Tuple[int, int]:
    """The range a write must fall in with every other knob at its default."""
    low, high = KIND_LIMITS[knob.handler(PROFILE)]
    declared = knob.value_range(PROFILE)
    if declared is not None:
        values = defaults()
        ends = [values[end] if isinstance(end, str) else end for end in declared]
        low, high = max(low, ends[0]), min(high, ends[1])
    return low, high


def knob_values(knob: Knob) -> List[str]:
    low, high = effective_range(knob)
    bounds = [str(v) for v in (low - 1, low, low + 1, (low + high) // 2, high - 1, high, high + 1)]
    return list(dict.fromkeys(bounds + list(COMMON_VALUES)))


def two_values(knob: Knob) -> Tuple[str, str]:
    """Two valid values, the first not the default, the second not the first."""
    low, high = effective_range(knob)
    default = knob.default(PROFILE)
    first = low if low != default else high
    second = high if first != high else low
    return str(first), str(second)


def _case(side_paths: Tuple[str, str], flags, ops, reset: Optional[str], what: str) -> dict:
    return {"ours": side_paths[0], "kernel": side_paths[1], "flags": list(flags), "ops": ops,
            "reset": reset, "readback": reset is not None, "what": what}


def write_patterns(knob: Knob) -> Iterator[Tuple[str, list]]:
    one, two = two_values(knob)
    yield "one write", [["write", _hex(one + "\n")]]
    yield "two writes", [["write", _hex(one + "\n")], ["write", _hex(two + "\n")]]
    yield "partial write, then the rest", [["write", _hex(f"{one} {two}\n")],
                                           ["write", _hex(f"{two}\n")]]
    yield "pwrite at 3", [["pwrite", _hex(one), 3]]
    yield "lseek 3, write", [["lseek", 3], ["write", _hex(one)]]
    yield "write, lseek 0, write", [["write", _hex(one)], ["lseek", 0], ["write", _hex(two)]]
    yield "write, read", [["write", _hex(one + "\n")], ["read", 100]]
    yield "refused write, then a good one", [["write", _hex("abc")], ["write", _hex(one)]]
    yield "write, fstat size", [["write", _hex(one + "\n")], ["size"]]
    yield "ftruncate 0, write", [["ftruncate", 0], ["write", _hex(one)]]
    yield "write, ftruncate 5, write", [["write", _hex(one)], ["ftruncate", 5], ["write", _hex(two)]]
    yield "write, fsync", [["write", _hex(one)], ["fsync"]]


READ_PATTERNS: Tuple[Tuple[str, list], ...] = (
    ("read 4096", [["read", 4096], ["read", 4096]]),
    ("reads of 1 byte (dd bs=1)", [["reads", 1, 5]]),
    ("reads of 2 bytes", [["reads", 2, 3]]),
    ("pread at 0", [["pread", 100, 0]]),
    ("pread at 1", [["pread", 100, 1]]),
    ("pread at 3", [["pread", 100, 3]]),
    ("pread at 200", [["pread", 100, 200]]),
    ("lseek 2, read", [["lseek", 2], ["read", 100]]),
    ("read, lseek 0, read", [["read", 100], ["lseek", 0], ["read", 100]]),
    ("pread 1 at 0, read", [["pread", 1, 0], ["read", 100]]),
    ("sendfile", [["sendfile", 65536]]),
    ("copy_file_range", [["copy_file_range", 65536]]),
    ("shutil.copyfile", [["copyfile"]]),
    ("mmap private", [["mmap", "private"]]),
    ("mmap shared", [["mmap", "shared"]]),
)

# What FUSE cannot answer as procfs does, because the daemon is never asked: the kernel
# serves splice and private mappings from the page cache, bounded by the file size (0),
# and refuses a shared mapping of a direct_io file with ENODEV where procfs's seq_file
# listings say EIO; an O_APPEND write reaches the daemon at the inode's size, so a
# pwrite or lseek on such a descriptor cannot be told from a plain write (README "Knobs").
KNOWN_FUSE_LIMITS = ("sendfile", "shutil.copyfile", "mmap private")
KNOWN_APPEND_LIMITS = ("pwrite at 3", "lseek 3, write", "write, lseek 0, write")


def known_limit(case: dict) -> bool:
    what = case["what"].split(": ", 1)[1]
    if what in KNOWN_FUSE_LIMITS or (what == "mmap shared" and case["ours"] in LISTING_FILES):
        return True
    return "O_APPEND" in case["flags"] and what in KNOWN_APPEND_LIMITS


def _read_cases(paths: Tuple[str, str], name: str) -> Iterator[dict]:
    for what, ops in READ_PATTERNS:
        yield _case(paths, ("O_RDONLY",), ops, None, f"{name}: {what}")
    yield _case(paths, ("O_RDONLY", "O_DIRECT"), [["read", 100]], None, f"{name}: O_DIRECT read")


def cases() -> List[dict]:
    found: List[dict] = []
    for ours, kernel in KNOB_FILES.items():
        knob = KNOBS_BY_PATH[ours]
        paths = (ours, kernel)
        reset = None if knob.readonly else str(knob.default(PROFILE))
        name = ours.rsplit("/", 1)[1]
        if not knob.readonly:
            for value in knob_values(knob):
                shown = value if len(value) < 30 else f"{value[:3]!r}...({len(value)} bytes)"
                found.append(_case(paths, ("O_WRONLY",), [["write", _hex(value)]], reset,
                                   f"{name}: value {shown!r}"))
        for flags in OPEN_MODES:
            for what, ops in write_patterns(knob):
                found.append(_case(paths, flags, ops, reset, f"{name} {'|'.join(flags)}: {what}"))
        found.extend(_read_cases(paths, f"{name} O_RDONLY"))
    for ours, kernel in LISTING_FILES.items():
        found.extend(_read_cases((ours, kernel), ours))
        found.append(_case((ours, kernel), ("O_WRONLY",), [], None, f"{ours}: open for writing"))
    return found


def side(all_cases: List[dict], which: str) -> List[dict]:
    """The cases as fileprobe.py takes them, with `which` side's paths."""
    return [{"path": c[which], "flags": c["flags"], "ops": c["ops"], "reset": c["reset"],
             "readback": c["readback"]} for c in all_cases]


def probe(cases_for_side: List[dict], root: str, namespace: str = "") -> List[dict]:
    """fileprobe.py's answers for `root` (in `namespace` when given)."""
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    done = subprocess.run(prefix + [sys.executable, PROBE, root], input=json.dumps(cases_for_side),
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"fileprobe.py {root} failed: {done.stderr}")
    return json.loads(done.stdout)


def case_class(case: dict) -> str:
    if ": value " in case["what"]:
        return "values"
    if case["flags"][0] == "O_RDONLY":
        return "reads"
    return "open modes x patterns" if case["ops"] else "listings opened for writing"


def main(mount_point: str, namespace: str) -> None:
    all_cases = cases()
    kernel = probe(side(all_cases, "kernel"), "/proc", namespace)
    ours = probe(side(all_cases, "ours"), mount_point)
    total: Dict[str, int] = collections.Counter()
    same: Dict[str, int] = collections.Counter()
    for case, theirs, mine in zip(all_cases, kernel, ours):
        total[case_class(case)] += 1
        same[case_class(case)] += theirs == mine
    known = sum(known_limit(c) and k != o for c, k, o in zip(all_cases, kernel, ours))
    print(f"{sum(same.values())} of {len(all_cases)} cases identical "
          f"({known} of the differences are known FUSE limits)")
    for name in total:
        print(f"  {name}: {same[name]} of {total[name]}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
