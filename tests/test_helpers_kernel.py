"""The helpers against the kernel: every capture of tests/data/kernel_helpers/ (FTP PORT,
EPRT, PASV, EPSV, a data connection to the wrong port, a PASV replacing another, TFTP, IRC
DCC; tests/kernel/helper_scenarios.py took them on a 6.18 kernel with nft `ct helper`)
replayed through the engine with the linux profile and the iptables rule that attaches
the same helper (`-t raw -A OUTPUT ... -j CT --helper NAME`).

Per scenario: the state of every frame (the DSCP marks), the table and the expectation
listing at every moment the kernel's were read (mid-traffic while the expectation
existed, and at the end; seconds within 1), and the stat file's totals (expect_new,
expect_create, expect_delete: on lo the kernel's helper reads each packet twice)."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pytest

from engine.replay import replay
from engine.rules import Ruleset
from kernelhelp import load_kernel_module, load_snapshot, stat_totals, verdict_text

DATA = Path(__file__).resolve().parent / "data" / "kernel_helpers"
SCENARIOS = sorted(p.name for p in DATA.iterdir() if (p / "snapshot.json").is_file())
listing = load_kernel_module("listing")

SECONDS = re.compile(r"^(\d+) ")


def rules_for(helpers: list) -> Ruleset:
    """The iptables form of the scenario's nft `ct helper` attachment."""
    lines = ["*raw"] + [f"-A OUTPUT -p {proto} -m {proto} --dport {port} -j CT --helper {name}"
                        for name, proto, port in helpers] + ["COMMIT", ""]
    return Ruleset.load_restore("\n".join(lines))


@lru_cache(maxsize=None)
def replayed(name: str, at: float):
    snap = load_snapshot(DATA / name)
    return replay(str(DATA / name / "capture.pcap"), profile="linux", at=at,
                  rules=rules_for(snap["helpers"]))


def moments(name: str) -> list:
    snap = load_snapshot(DATA / name)
    return snap["expect_snapshots"]


def compare_expect(kernel: list, engine: list) -> list:
    """Line by line, in any order, the countdown within one second."""
    def split(lines):
        return sorted((SECONDS.sub("", line), int(SECONDS.match(line).group(1))) for line in lines)
    problems = []
    got, want = split(engine), split(kernel)
    if [text for text, _ in got] != [text for text, _ in want]:
        return [f"kernel {kernel} != engine {engine}"]
    for (text, mine), (_, theirs) in zip(got, want):
        if abs(mine - theirs) > 1:
            problems.append(f"{text}: {mine} s, the kernel {theirs} s")
    return problems


def test_the_data_set_has_every_helper_scenario():
    assert len(SCENARIOS) >= 8
    for name in SCENARIOS:
        assert any(m["expect"] for m in moments(name)), f"{name}: no expectation was seen"


@pytest.mark.parametrize("name", SCENARIOS)
def test_per_frame_states_match_kernel(name):
    snap = load_snapshot(DATA / name)
    result = replayed(name, snap["at"])
    assert [verdict_text(v) for v in result.verdicts] == snap["frame_states"]
    assert "RELATED" in snap["frame_states"] or name == "ftp_wrong_port" \
        or name == "ftp_second_pasv_replaces"


@pytest.mark.parametrize("name", SCENARIOS)
def test_expectations_and_table_match_kernel_at_every_moment(name):
    for moment in moments(name):
        result = replayed(name, moment["at"])
        assert compare_expect(moment["expect"], result.text("expect").splitlines()) == [], \
            moment["label"]
        engine_lines = result.text("nf_conntrack").splitlines()
        assert listing.compare_listings(moment["listing"], engine_lines) == [], moment["label"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_stat_totals_match_kernel(name):
    snap = load_snapshot(DATA / name)
    kernel = stat_totals(snap["stat"])
    engine = stat_totals(replayed(name, snap["at"]).text("stat"))
    for column in ("expect_new", "expect_create", "expect_delete", "invalid", "drop"):
        assert engine[column] == kernel[column], (column, engine[column], kernel[column])
