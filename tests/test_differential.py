"""Differential suite: every capture taken on the real kernel, replayed through the engine.

Each tests/data/kernel/<scenario>/ holds capture.pcap (tcpdump on lo inside a throw-away
namespace of a 6.18 kernel, HZ=250; conntrack ran at OUTPUT for every frame) and
snapshot.json (/proc/net/nf_conntrack read at a known wall-clock time, the stat file, the
nft counters per `ct state`, the knobs the scenario changed). tests/kernel/regen.sh makes
them; this file only reads them, so it runs anywhere.

Per scenario the engine must reproduce:
* the listing at the snapshot's time: unordered, every field equal, seconds within +-1;
* the per-state packet counts of the nft counter rules (held fragments are not counted);
* the state of every frame, which the kernel's OUTPUT chain wrote into the DSCP bits;
* the stat file's column totals.
"""
from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from engine.replay import replay
import kernelhelp
from engine.replay import NOT_SEEN
from kernelhelp import engine_frame_words, kernel_frame_words, load_kernel_module, stat_totals

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data" / "kernel"


listing = load_kernel_module("listing")
pcapfile = load_kernel_module("pcapfile")

SCENARIOS = sorted(p.name for p in DATA.iterdir() if (p / "snapshot.json").is_file())
STATES = ("new", "established", "related", "invalid", "untracked")

# Stat columns a capture cannot carry: packets the kernel dropped *at* conntrack never
# reached tcpdump, so nothing in the capture tells the engine they existed.
STAT_NOT_IN_CAPTURE = {
    "table_full": {"drop": "the 4 refused datagrams were dropped at OUTPUT, before the capture"},
}


def load_snapshot(name: str) -> dict:
    return kernelhelp.load_snapshot(DATA / name)


@lru_cache(maxsize=None)
def replayed(name: str):
    return kernelhelp.replay_scenario(DATA / name)


# --- the listing parser, on the spec's sample lines -------------------------------------------

SPEC_NF_SYN_SENT = ("ipv4     2 tcp      6 119 SYN_SENT src=127.0.0.1 dst=127.0.0.2 sport=41001 "
                    "dport=6000 [UNREPLIED] src=127.0.0.2 dst=127.0.0.1 sport=6000 dport=41001 "
                    "mark=0 zone=0 use=2")
SPEC_NF_UDP_ACCT = ("ipv4     2 udp      17 28 src=127.0.0.1 dst=127.0.0.1 sport=44000 dport=9002 "
                    "zone-orig=8 packets=1 bytes=38 src=127.0.0.1 dst=127.0.0.1 sport=9002 "
                    "dport=44000 packets=1 bytes=48 mark=0 delta-time=1 use=2")
SPEC_IPCT_ESTABLISHED = ("tcp      6 431999 ESTABLISHED src=192.168.1.5 dst=192.168.1.35 sport=1031 "
                         "dport=23 src=192.168.1.35 dst=192.168.1.5 sport=23 dport=1031 "
                         "[ASSURED] use=1")


def test_parse_nf_conntrack_tcp_line_from_spec():
    """Spec §1.2 observed: `ipv4 2 tcp 6 119 SYN_SENT ... [UNREPLIED] ... mark=0 zone=0 use=2`."""
    entry = listing.parse_line(SPEC_NF_SYN_SENT)
    assert (entry.l3, entry.l3num, entry.l4, entry.l4num) == ("ipv4", 2, "tcp", 6)
    assert entry.seconds == 119
    assert entry.state == "SYN_SENT"
    assert entry.original == (("src", "127.0.0.1"), ("dst", "127.0.0.2"),
                              ("sport", "41001"), ("dport", "6000"))
    assert entry.reply == (("src", "127.0.0.2"), ("dst", "127.0.0.1"),
                           ("sport", "6000"), ("dport", "41001"))
    assert entry.flags == ((1, "[UNREPLIED]"),)
    assert entry.extras == (("mark", "0"), ("zone", "0"), ("use", "2"))


def test_parse_nf_conntrack_line_with_zone_orig_and_accounting():
    """Spec §1.2 observed: zone-orig, packets/bytes per direction, delta-time, no zone=."""
    entry = listing.parse_line(SPEC_NF_UDP_ACCT)
    assert entry.l4 == "udp" and entry.seconds == 28 and entry.state is None
    assert entry.counters == ((0, "packets", 1), (0, "bytes", 38),
                              (1, "packets", 1), (1, "bytes", 48))
    assert entry.extra("zone-orig") == "8"
    assert entry.extra("delta-time") == "1"
    assert entry.extra("zone") is None
    assert entry.flags == ()


def test_parse_ip_conntrack_lines_from_spec():
    """Spec §1.1: the tutorial's lines, no L3 prefix; [ASSURED] after the reply tuple."""
    entry = listing.parse_line(SPEC_IPCT_ESTABLISHED)
    assert entry.l3 is None and entry.l4 == "tcp" and entry.seconds == 431999
    assert entry.state == "ESTABLISHED"
    assert entry.flags == ((2, "[ASSURED]"),)
    icmp = listing.parse_line(
        "icmp     1 25 src=192.168.1.6 dst=192.168.1.10 type=8 code=0 id=33029 [UNREPLIED] "
        "src=192.168.1.10 dst=192.168.1.6 type=0 code=0 id=33029 use=1")
    assert icmp.original[2:] == (("type", "8"), ("code", "0"), ("id", "33029"))
    assert icmp.reply[2] == ("type", "0")
    generic = listing.parse_line("unknown  47 599 src=10.0.0.1 dst=10.0.0.2 [UNREPLIED] "
                                 "src=10.0.0.2 dst=10.0.0.1 use=1")
    assert (generic.l4, generic.l4num, generic.seconds) == ("unknown", 47, 599)
    assert generic.original == (("src", "10.0.0.1"), ("dst", "10.0.0.2"))


def test_parse_gre_line_with_tracker_info_before_the_tuple():
    """Observed on 6.18 (scenario gre_proto47): GRE prints its timeouts before the tuple."""
    entry = listing.parse_line(
        "ipv4     2 gre      47 29 timeout=30, stream_timeout=180 src=127.0.0.1 dst=127.0.0.2 "
        "srckey=0x0 dstkey=0x0 src=127.0.0.2 dst=127.0.0.1 srckey=0x0 dstkey=0x0 mark=0 zone=0 use=2")
    assert entry.info == ("timeout=30,", "stream_timeout=180")
    assert entry.state is None
    assert entry.original[2:] == (("srckey", "0x0"), ("dstkey", "0x0"))


def test_parse_rejects_a_line_without_two_tuples():
    with pytest.raises(ValueError):
        listing.parse_line("ipv4     2 tcp      6 119 SYN_SENT src=1.2.3.4 dst=5.6.7.8 use=2")


def test_compare_accepts_one_second_and_any_order():
    """The kernel counts in jiffies: 119 vs 118 is the same entry; order is hash order (§1.3)."""
    other = SPEC_NF_SYN_SENT.replace("41001", "41002")
    assert listing.compare_listings([SPEC_NF_SYN_SENT, other],
                                    [other.replace(" 119 ", " 118 "), SPEC_NF_SYN_SENT]) == []


def test_compare_reports_seconds_flags_and_missing_entries():
    off_by_two = SPEC_NF_SYN_SENT.replace(" 119 ", " 117 ")
    assert listing.compare_listings([SPEC_NF_SYN_SENT], [off_by_two]) == [
        f"seconds left: kernel 119, engine 117: {SPEC_NF_SYN_SENT}"]
    replied = SPEC_NF_SYN_SENT.replace("[UNREPLIED] ", "")
    assert listing.compare_listings([SPEC_NF_SYN_SENT], [replied]) == [
        f"engine only:         {replied}", f"missing from engine: {SPEC_NF_SYN_SENT}"]
    assert listing.compare_listings([SPEC_NF_SYN_SENT], [SPEC_NF_SYN_SENT.replace("use=2", "use=1")])


def test_compare_reports_spacing_differences():
    squeezed = SPEC_NF_SYN_SENT.replace("tcp      6", "tcp 6")
    (problem,) = listing.compare_listings([SPEC_NF_SYN_SENT], [squeezed])
    assert problem.startswith("text differs")


# --- the stored data set -------------------------------------------------------------------------

def test_kernel_data_set_is_complete_and_small():
    """At least 22 scenarios; each capture < 200 KB, the whole directory < 3 MB."""
    assert len(SCENARIOS) >= 22
    total = 0
    for name in SCENARIOS:
        size = (DATA / name / "capture.pcap").stat().st_size
        assert size < 200_000, name
        total += sum(p.stat().st_size for p in (DATA / name).iterdir())
    assert total < 3_000_000


@pytest.mark.parametrize("name", SCENARIOS)
def test_stored_marks_agree_with_nft_counters(name):
    """Generator invariant: the DSCP marks in the capture count what the nft counters counted."""
    snap = load_snapshot(name)
    _, frames = pcapfile.read_pcap(str(DATA / name / "capture.pcap"))
    assert len(frames) == snap["frames"]
    assert all(f.ts <= snap["before"] for f in frames)
    assert sum(snap["counters"][s] for s in STATES) == sum(
        1 for group in datagram_groups(frames) if snap["frame_states"][group[0]] is not None)


# --- engine vs kernel ----------------------------------------------------------------------------

def datagram_groups(frames) -> list[list[int]]:
    """Frame indices grouped by IP datagram: a fragment train is one group, others singletons."""
    groups: dict = {}
    order = []
    for frame in frames:
        key = frame.fragment_key()
        if key is None:
            key = ("frame", frame.index)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(frame.index)
    return [groups[key] for key in order]


@pytest.mark.parametrize("name", SCENARIOS)
def test_listing_matches_kernel(name):
    """/proc/net/nf_conntrack at the snapshot time: same entries, seconds within +-1."""
    snap = load_snapshot(name)
    engine_lines = replayed(name).text("nf_conntrack").splitlines()
    problems = listing.compare_listings(snap["listing"], engine_lines)
    assert not problems, f"{name}: {snap['description']}\n" + "\n".join(problems)


@pytest.mark.parametrize("name", SCENARIOS)
def test_ctstate_counts_match_nft_counters(name):
    """Per-state packet counts (ct state new/established/related/invalid/untracked and
    ct direction reply, counted at OUTPUT after conntrack) equal the engine's verdicts."""
    snap = load_snapshot(name)
    result = replayed(name)
    assert len(result.verdicts) == snap["frames"]
    got = Counter()
    for verdict in result.verdicts:
        if verdict is not None:
            got[verdict.state.name.lower()] += 1
            got["reply"] += bool(verdict.reply)
    got = {key: got[key] for key in snap["counters"]}
    assert got == snap["counters"], f"{name}: {snap['description']}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_per_frame_states_match_kernel(name):
    """Each frame's state as the kernel's OUTPUT chain marked it in the DSCP bits. A fragment
    train is one datagram: exactly one of its frames carries the verdict (the others are held
    fragments, NOTSEEN); an unmarked train (never passed OUTPUT) is NOTSEEN throughout."""
    snap = load_snapshot(name)
    kernel = kernel_frame_words(snap["frame_states"])
    engine = engine_frame_words(replayed(name).verdicts)
    _, frames = pcapfile.read_pcap(str(DATA / name / "capture.pcap"))
    assert len(engine) == len(kernel)
    problems = []
    for group in datagram_groups(frames):
        expected = kernel[group[0]]
        got = [engine[i] for i in group]
        # A train's other frames are held fragments: NOTSEEN on both sides.
        if sorted(got) != sorted([expected] + [NOT_SEEN] * (len(group) - 1)):
            where = f"frame {group[0]}" if len(group) == 1 else f"frames {group}"
            problems.append(f"{where}: kernel {expected}, engine {got if len(group) > 1 else got[0]}")
    assert not problems, f"{name}: {snap['description']}\n" + "\n".join(problems)


@pytest.mark.parametrize("name", SCENARIOS)
def test_stat_totals_match_kernel(name):
    """/proc/net/stat/nf_conntrack: entries and the summed per-CPU counters."""
    snap = load_snapshot(name)
    kernel = stat_totals(snap["stat"])
    engine = stat_totals(replayed(name).text("stat"))
    for column in STAT_NOT_IN_CAPTURE.get(name, {}):
        kernel.pop(column)
        engine.pop(column)
    diff = {col: (kernel.get(col), engine.get(col))
            for col in sorted(set(kernel) | set(engine)) if kernel.get(col) != engine.get(col)}
    assert not diff, f"{name}: (kernel, engine) per column: {diff}"


# --- live, optional ------------------------------------------------------------------------------

@pytest.mark.kernel
def test_live_kernel_agrees_with_engine(tmp_path):
    """Regenerate one quick scenario on the running kernel now and compare like the stored ones."""
    reason = kernelhelp.namespaces_unavailable(("ip", "nft", "tcpdump"), "pct-probe-pytest")
    if reason:
        pytest.skip(reason)
    scenarios = load_kernel_module("scenarios")
    name = "tcp_client_close"
    assert scenarios.run_scenario(scenarios.SCENARIOS[name], tmp_path) == "ok"
    snap = json.loads((tmp_path / name / "snapshot.json").read_text())
    result = replay(str(tmp_path / name / "capture.pcap"), profile="linux", at=snap["at"])
    assert listing.compare_listings(snap["listing"], result.text("nf_conntrack").splitlines()) == []
    assert engine_frame_words(result.verdicts) == kernel_frame_words(snap["frame_states"])
