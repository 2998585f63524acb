"""Every knob and listing file answers each open, read and write as the kernel's own file.

The cases (tests/fileops_matrix.py) run through one script, tests/fileprobe.py, twice:
in a network namespace of our own against the kernel's /proc (the netfilter and ipfrag
knobs are per namespace, and the namespace goes away with everything written to it), and
against a procfs-ct mount of the linux profile.  Each case must give the same open
result, the same return value or errno for every call, and the same value read back.
The few things FUSE cannot do as procfs does are listed in fileops_matrix (known_limit);
for those the kernel's own answer is still checked to be what README.md says it is.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Mount, fuse_unavailable, is_mounted, make_base_dir
from fileops_matrix import KNOB_FILES, LISTING_FILES, cases, known_limit, probe, side

_KERNEL_HELPERS = str(Path(__file__).resolve().parent / "kernel")
if _KERNEL_HELPERS not in sys.path:
    sys.path.insert(0, _KERNEL_HELPERS)
import netns  # noqa: E402  (tests/kernel: namespace plumbing)

pytestmark = [pytest.mark.kernel, pytest.mark.mount]

NAMESPACE = "pctf-fileops"
CASES = cases()


@pytest.fixture(scope="module")
def answers():
    """(kernel's answers, ours) for every case, each list in CASES order."""
    reason = fuse_unavailable()
    if reason:
        pytest.skip(reason)
    if not shutil.which("ip"):
        pytest.skip("needs iproute2")
    netns.create_namespace(NAMESPACE)
    mount = None
    try:
        missing = [k for k in set(KNOB_FILES.values()) | set(LISTING_FILES.values())
                   if subprocess.run(["ip", "netns", "exec", NAMESPACE, "test", "-e",
                                      f"/proc/{k}"]).returncode]
        if missing:
            pytest.skip(f"the kernel serves no {missing[0]} (nf_conntrack, nf_defrag_ipv6 loaded?)")
        kernel = probe(side(CASES, "kernel"), "/proc", NAMESPACE)
        mount = Mount(make_base_dir(), ["--source", "none", "--profile", "linux"], True).start()
        ours = probe(side(CASES, "ours"), str(mount.mnt))
    finally:
        netns.delete_namespace(NAMESPACE)
        if mount is not None:
            mount.stop()
            if not is_mounted(mount.mnt):
                shutil.rmtree(mount.base, ignore_errors=True)
    return kernel, ours


def _report(rows: list) -> str:
    return "\n".join(f"{case['what']} [{'|'.join(case['flags'])}]\n   kernel {kernel}\n   ours   {ours}"
                     for case, kernel, ours in rows[:40])


def test_every_case_answers_as_the_kernel(answers):
    kernel, ours = answers
    assert len(kernel) == len(ours) == len(CASES)
    differ = [(c, k, o) for c, k, o in zip(CASES, kernel, ours) if k != o and not known_limit(c)]
    identical = sum(k == o for k, o in zip(kernel, ours))
    assert not differ, (f"{len(differ)} of {len(CASES)} cases differ ({identical} identical):\n"
                        + _report(differ))


def test_the_matrix_covers_each_class(answers):
    """A matrix that lost a class would pass the comparison without testing it."""
    kernel, _ = answers
    whats = " ".join(c["what"] + "|".join(c["flags"]) for c in CASES)
    for needle in ("O_APPEND", "O_TRUNC", "O_DIRECT", "O_RDWR", "two writes", "pwrite",
                   "lseek", "partial write", "(4096 bytes)", "(4097 bytes)", "(4095 bytes)",
                   "'000000000000000000001'", "sendfile", "copy_file_range", "mmap",
                   "reads of 1 byte", "pread at 3"):
        assert needle in whats, needle
    # The kernel refused and accepted some writes of each knob (bounds are real bounds).
    for path in KNOB_FILES:
        values = [k for c, k in zip(CASES, kernel) if c["ours"] == path and ": value " in c["what"]]
        if values:
            assert any(k["ops"] == ["EINVAL"] for k in values), path
            assert any(isinstance(k["ops"][0], int) and k["ops"][0] > 0 for k in values), path


def test_known_fuse_limits_are_what_the_readme_says(answers):
    """Where FUSE cannot follow, the kernel's answer is the documented one: content from
    sendfile and shutil.copyfile, ENODEV (knobs) or EIO (listings) from mmap."""
    kernel, _ = answers
    for case, answer in zip(CASES, kernel):
        if not known_limit(case) or "O_APPEND" in case["flags"]:
            continue
        what = case["what"].split(": ", 1)[1]
        if what.startswith("mmap"):
            expected = "EIO" if case["ours"] in LISTING_FILES else "ENODEV"
            assert answer["ops"] == [expected], case["what"]
        elif case["ours"] in KNOB_FILES:
            copied = answer["ops"][0][1] if what == "sendfile" else answer["ops"][0]
            assert copied.endswith("\n") and copied.strip().lstrip("-").isdigit(), case["what"]

