"""Wire differential suite: traffic that arrived from a wire, replayed through the engine.

Each tests/data/wire/<scenario>/ was made by tests/kernel/regen_wire.sh on a 6.18 kernel
(HZ=250): a client namespace and a server namespace joined by a veth pair, the server being
the observed host. capture.pcap is the server's `tcpdump -i any` (LINUX_SLL2): the packets it
received, which conntrack met at PREROUTING with L4 checksums verified (nf_conntrack_checksum),
and the packets it sent, met at OUTPUT. The link header's packet type tells the engine which
hook each frame met. nflog.pcap holds the kernel's verdict for every packet that passed
conntrack (nft `log group` rules per ct state after conntrack in prerouting and output);
snapshot.json holds those verdicts matched to the frames, the per-hook nft counters, the
server's /proc/net/nf_conntrack read at a known wall-clock time and its stat file.

Per scenario the engine must reproduce, as the loopback suite (test_differential.py) does:
* the listing at the snapshot's time: unordered, every field equal, seconds within +-1;
* the per-state packet counts of each hook's nft counter rules;
* the state of every frame (NOTSEEN where the kernel logged no verdict for the packet);
* the stat file's column totals.
Where the engine disagrees with the kernel, that one comparison is an expected failure
(strict) naming the disagreement, until the engine is fixed.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

import subprocess

import pytest

import kernelhelp
from conftest import child_env, procfs_ct_command
from engine.replay import NOT_SEEN
from kernelhelp import (engine_frame_words, kernel_frame_words, load_kernel_module, stat_totals,
                        verdict_text)

DATA = Path(__file__).resolve().parent / "data" / "wire"

listing = load_kernel_module("listing")
pcapfile = load_kernel_module("pcapfile")
cooked = load_kernel_module("cooked")

SCENARIOS = sorted(p.name for p in DATA.iterdir() if (p / "snapshot.json").is_file())
STATES = ("new", "established", "related", "invalid", "untracked")
HOOK_OF_DIRECTION = {False: "prerouting", True: "output"}     # by frame.outgoing
HOOK_NUMBERS = {"prerouting": cooked.NF_INET_PRE_ROUTING, "output": cooked.NF_INET_LOCAL_OUT}

# (test, scenario) -> the engine's disagreement with the kernel, as observed.
_PARTIAL = ("with checksum offload on, the client's packets cross the veth as CHECKSUM_PARTIAL: "
            "the kernel trusts them unverified, but the captured bytes hold only the "
            "pseudo-header sum; the engine verifies those bytes at PREROUTING and finds every "
            "client packet's checksum wrong")
KNOWN_DISAGREEMENTS: dict[tuple[str, str], str] = {
    ("listing", "wire_offloaded_checksums"): _PARTIAL + " (kernel: TCP TIME_WAIT [ASSURED] and "
        "UDP [UNREPLIED]; engine: only a TCP CLOSE_WAIT entry in the server's direction, made "
        "from its FIN)",
    ("counters", "wire_offloaded_checksums"): _PARTIAL + " (prerouting: kernel new 2, "
        "established 5; engine established 1 (as a reply), invalid 6; output: kernel "
        "established 5, reply 5; engine new 4, invalid 1)",
    ("frames", "wire_offloaded_checksums"): _PARTIAL + " (the 6 incoming frames: kernel "
        "NEW/ESTABLISHED, engine INVALID, and the server's replies follow from that)",
    ("stat", "wire_offloaded_checksums"): _PARTIAL + " (entries: kernel 2, engine 1; invalid: "
        "kernel 0, engine 7)",
}


def scenarios_for(test: str) -> list:
    """The scenarios, with an expected (strict) failure where the engine is known wrong."""
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True,
                                                       reason=KNOWN_DISAGREEMENTS[test, name]))
            if (test, name) in KNOWN_DISAGREEMENTS else name for name in SCENARIOS]


def load_snapshot(name: str) -> dict:
    return kernelhelp.load_snapshot(DATA / name)


@lru_cache(maxsize=None)
def cooked_frames(name: str) -> tuple:
    linktype, frames = pcapfile.read_pcap(str(DATA / name / "capture.pcap"))
    assert linktype == cooked.LINKTYPE_LINUX_SLL2, name
    return tuple(cooked.cooked(frame.data) for frame in frames)


@lru_cache(maxsize=None)
def groups(name: str) -> list:
    """Frame indices by IP datagram (a fragment train is one group)."""
    frames = cooked_frames(name)
    return cooked.datagram_groups([f.ip() for f in frames], [f.outgoing for f in frames])


@lru_cache(maxsize=None)
def replayed(name: str):
    return kernelhelp.replay_scenario(DATA / name)


def counts_by_hook(name: str, states: list) -> dict:
    """Per hook, what its counter rules count for these per-frame verdict texts: one count
    per datagram (a fragment train once, by whichever frame carries its verdict)."""
    frames = cooked_frames(name)
    counts = {hook: Counter(dict.fromkeys(STATES + ("reply",), 0))
              for hook in HOOK_OF_DIRECTION.values()}
    for group in groups(name):
        verdicts = [states[i] for i in group if states[i] is not None]
        if not verdicts:
            continue
        state, _, reply = verdicts[0].partition(" ")
        hook = counts[HOOK_OF_DIRECTION[frames[group[0]].outgoing]]
        hook[state.lower()] += 1
        hook["reply"] += bool(reply)
    return {hook: dict(count) for hook, count in counts.items()}


# --- the stored data set -------------------------------------------------------------------------

def test_wire_data_set_is_complete_and_small():
    """At least 15 scenarios, all wire_*; each capture < 200 KB, the directory < 3 MB."""
    assert len(SCENARIOS) >= 15
    assert all(name.startswith("wire_") for name in SCENARIOS)
    total = 0
    for name in SCENARIOS:
        assert (DATA / name / "capture.pcap").stat().st_size < 200_000, name
        total += sum(p.stat().st_size for p in (DATA / name).iterdir())
    assert total < 3_000_000


@pytest.mark.parametrize("name", SCENARIOS)
def test_stored_capture_is_wire_traffic(name):
    """Generator invariant: a cooked capture, every frame IPv4 or IPv6, some of them received (the
    frames the engine must track at PREROUTING), none after the snapshot."""
    snap = load_snapshot(name)
    assert snap["hooks"] == "wire"
    _, frames = pcapfile.read_pcap(str(DATA / name / "capture.pcap"))
    assert len(frames) == snap["frames"] == len(snap["frame_states"])
    assert all(f.ts <= snap["before"] for f in frames)
    assert all(f.ip() is not None for f in cooked_frames(name))
    assert any(not f.outgoing for f in cooked_frames(name))
    assert not any(snap["other_conntrack_counts"].values())


@pytest.mark.parametrize("name", SCENARIOS)
def test_stored_verdicts_agree_with_nflog_and_counters(name):
    """Generator invariant: the per-frame verdicts count what each hook's counters counted,
    and the stored NFLOG records carry the same verdicts, hook by hook, in order."""
    snap = load_snapshot(name)
    assert counts_by_hook(name, snap["frame_states"]) == snap["counters"]
    _, records = pcapfile.read_pcap(str(DATA / name / "nflog.pcap"))
    logged = [cooked.log_record(r.data) for r in records]
    frames = cooked_frames(name)
    for hook, number in HOOK_NUMBERS.items():
        stored = [snap["frame_states"][g[0]] for g in groups(name)
                  if HOOK_OF_DIRECTION[frames[g[0]].outgoing] == hook
                  and snap["frame_states"][g[0]] is not None]
        assert stored == [r.prefix for r in logged if r.hook == number], hook


# --- engine vs kernel ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", scenarios_for("listing"))
def test_listing_matches_kernel(name):
    """/proc/net/nf_conntrack of the server at the snapshot time: same entries, seconds +-1."""
    snap = load_snapshot(name)
    engine_lines = replayed(name).text("nf_conntrack").splitlines()
    problems = listing.compare_listings(snap["listing"], engine_lines)
    assert not problems, f"{name}: {snap['description']}\n" + "\n".join(problems)


@pytest.mark.parametrize("name", scenarios_for("counters"))
def test_ctstate_counts_match_nft_counters(name):
    """Per hook, the per-state packet counts (ct state ..., ct direction reply, counted after
    conntrack in prerouting and in output) equal the engine's verdicts."""
    snap = load_snapshot(name)
    result = replayed(name)
    assert len(result.verdicts) == snap["frames"]
    got = counts_by_hook(name, [verdict_text(v) for v in result.verdicts])
    assert got == snap["counters"], f"{name}: {snap['description']}"


@pytest.mark.parametrize("name", scenarios_for("frames"))
def test_per_frame_states_match_kernel(name):
    """Each frame's state as the kernel logged it. A fragment train is one datagram: exactly
    one of its frames carries the verdict (the others are held fragments, NOTSEEN); a frame
    the kernel logged no verdict for (dropped by ip_rcv, a lone fragment) is NOTSEEN."""
    snap = load_snapshot(name)
    kernel = kernel_frame_words(snap["frame_states"])
    engine = engine_frame_words(replayed(name).verdicts)
    assert len(engine) == len(kernel)
    problems = []
    for group in groups(name):
        expected = kernel[group[0]]
        got = [engine[i] for i in group]
        # A train's other frames are held fragments: NOTSEEN on both sides.
        if sorted(got) != sorted([expected] + [NOT_SEEN] * (len(group) - 1)):
            where = f"frame {group[0]}" if len(group) == 1 else f"frames {group}"
            problems.append(f"{where}: kernel {expected}, engine {got if len(group) > 1 else got[0]}")
    assert not problems, f"{name}: {snap['description']}\n" + "\n".join(problems)


@pytest.mark.parametrize("name", scenarios_for("stat"))
def test_stat_totals_match_kernel(name):
    """/proc/net/stat/nf_conntrack of the server: entries and the summed per-CPU counters."""
    snap = load_snapshot(name)
    kernel = stat_totals(snap["stat"])
    engine = stat_totals(replayed(name).text("stat"))
    diff = {col: (kernel.get(col), engine.get(col))
            for col in sorted(set(kernel) | set(engine)) if kernel.get(col) != engine.get(col)}
    assert not diff, f"{name}: (kernel, engine) per column: {diff}"


KNOB_SCENARIOS = [name for name in SCENARIOS if load_snapshot(name)["knobs_overrides"]]


@pytest.mark.parametrize("name", KNOB_SCENARIOS)
def test_replay_command_with_the_scenarios_knobs_matches_kernel(name):
    """`procfs-ct replay --set nf_conntrack_<knob>=<value>` (the knobs the generator wrote in
    the server namespace, stored with the capture) prints the kernel's listing."""
    snap = load_snapshot(name)
    sets = [arg for spec in kernelhelp.knob_sets(snap) for arg in ("--set", spec)]
    done = subprocess.run(procfs_ct_command() + [
        "replay", str(DATA / name / "capture.pcap"), "--profile", "linux", "--format",
        "nf_conntrack", "--at", repr(snap["at"]), *kernelhelp.host_options(snap), *sets],
        capture_output=True, text=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    problems = listing.compare_listings(snap["listing"], done.stdout.splitlines())
    assert not problems, f"{name}: {snap['description']}\n" + "\n".join(problems)


def test_the_knob_scenarios_cover_the_non_default_knobs():
    knobs = {knob for name in KNOB_SCENARIOS for knob in load_snapshot(name)["knobs_overrides"]}
    assert {"checksum", "tcp_loose", "tcp_be_liberal", "tcp_max_retrans", "udp_timeout",
            "acct", "timestamp", "tcp_ignore_invalid_rst"} <= knobs


# --- live, optional ------------------------------------------------------------------------------

@pytest.mark.kernel
def test_live_wire_kernel_agrees_with_engine(tmp_path):
    """Regenerate one wire scenario on the running kernel now (checksums verified at
    PREROUTING, replies at OUTPUT, an ICMP error arriving) and compare like the stored ones."""
    reason = kernelhelp.namespaces_unavailable(("ip", "nft", "tcpdump", "ethtool"),
                                               "pctw-probe-pytest")
    if reason:
        pytest.skip(reason)
    generator = load_kernel_module("wire_scenarios")
    name = "wire_icmp_bad_checksum"
    assert generator.run_scenario(generator.SCENARIOS[name], tmp_path) == "ok"
    snap = kernelhelp.load_snapshot(tmp_path / name)
    result = kernelhelp.replay_scenario(tmp_path / name)
    assert "INVALID" in snap["frame_states"]
    assert listing.compare_listings(snap["listing"], result.text("nf_conntrack").splitlines()) == []
    assert engine_frame_words(result.verdicts) == kernel_frame_words(snap["frame_states"])
