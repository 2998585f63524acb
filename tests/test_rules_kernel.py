"""The rules engine against the kernel: the data under tests/data/rules/ was made by
tests/kernel/rules_oracle.py (iptables-legacy in network namespaces, the kernel's own
per-packet classification recorded through NFLOG).

* the kernel's `iptables-legacy-save -c` output, loaded and saved again, is byte-identical;
  the scenario's input, loaded, saves as the kernel saved it (counters aside);
* every recorded packet replayed through the hooks leaves exactly the kernel's packet and
  byte counters on every rule and policy (`iptables-legacy-save -c`, byte for byte);
* the REJECT replies the engine builds are the datagrams the kernel sent (except the ICMP
  error's IP ID, which the kernel draws from its generator);
* `-S`, `-L -v` and `-L -n -v -x --line-numbers` print what iptables printed.
"""
from __future__ import annotations

import re

import pytest

from engine.rules import Ruleset, apply_command
from ruleshelp import DATA, load_scenario, replay_records, save_stamp, scenarios

SCENARIOS = scenarios()


def test_enough_kernel_scenarios():
    assert len(SCENARIOS) >= 20


def _zero_counters(text: str) -> str:
    text = re.sub(r"^\[\d+:\d+\] ", "[0:0] ", text, flags=re.M)
    return re.sub(r"^(:\S+ \S+) \[\d+:\d+\]$", r"\1 [0:0]", text, flags=re.M)


@pytest.mark.parametrize("name", SCENARIOS)
def test_kernel_save_round_trips_byte_exact(name):
    _, _, _, kernel_save = load_scenario(name)
    rs = Ruleset.load_restore(kernel_save, counters=True)
    # Loading instantiates the tables in the file's order, which a save prints reversed
    # (as the kernel would after the same restore): compare table by table.
    tables = re.findall(r"^\*(\w+)$", kernel_save, flags=re.M)
    stamp = save_stamp(kernel_save)
    assert "".join(rs.save(counters=True, table=t, stamp=stamp) for t in tables) == kernel_save


@pytest.mark.parametrize("name", SCENARIOS)
def test_input_saves_as_the_kernel_saves_it(name):
    rules, _, _, kernel_save = load_scenario(name)
    rs = Ruleset.load_restore(rules)
    assert rs.save(counters=True, stamp=save_stamp(kernel_save)) == _zero_counters(kernel_save)


@pytest.mark.parametrize("name", SCENARIOS)
def test_counters_after_the_kernels_packets(name):
    rules, records, ifaces, kernel_save = load_scenario(name)
    rs = Ruleset.load_restore(rules)
    replay_records(rs, records, ifaces)
    assert rs.save(counters=True, stamp=save_stamp(kernel_save)) == kernel_save


@pytest.mark.parametrize("name", SCENARIOS)
def test_notrack_verdicts_are_the_kernels_untracked_packets(name):
    rules, records, ifaces, _ = load_scenario(name)
    result = replay_records(Ruleset.load_restore(rules), records, ifaces)
    for index, (rec, notrack) in enumerate(zip(records, result.notrack)):
        if notrack is not None:
            assert notrack == (rec["prefix"] == "untracked"), index
    if name == "notrack_raw":
        assert result.notrack.count(True) >= 6
        listing = (DATA / name / "nf_conntrack.txt").read_text()
        assert "dport=7030" not in listing and "dport=7031" in listing   # no entry was made


def _listing_sections(name: str) -> dict[str, str]:
    text = (DATA / name / "list.txt").read_text()
    parts = re.split(r"^## (.*)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("name", SCENARIOS)
def test_list_rules_and_listings_match_iptables(name):
    rules, records, ifaces, _ = load_scenario(name)
    rs = Ruleset.load_restore(rules)
    replay_records(rs, records, ifaces)
    # (without -n iptables would print host names for addresses that have one; none of
    # the scenarios' addresses has a name in the namespace, so -L -v is compared too)
    for title, expected in _listing_sections(name).items():
        assert apply_command(rs, title.split()) == expected, title


REJECT_SCENARIOS = ["reject_tcp_reset", "reject_icmp_variants", "rc_firewall", "policy_drop_input"]


def _without_ip_id(datagram: bytes) -> bytes:
    return datagram[:4] + b"\0\0" + datagram[6:10] + b"\0\0" + datagram[12:]


@pytest.mark.parametrize("name", [n for n in REJECT_SCENARIOS if n in SCENARIOS])
def test_reject_replies_are_the_kernels(name):
    rules, records, ifaces, _ = load_scenario(name)
    rs = Ruleset.load_restore(rules)
    result = replay_records(rs, records, ifaces)
    sent = [bytes.fromhex(r["payload"]) for r in records if r["hook"] == "OUTPUT"]
    for index, reply in result.rejects:
        # the kernel's reply is the next packet it sent after the rejected one
        later = [bytes.fromhex(r["payload"]) for r in records[index + 1:] if r["hook"] == "OUTPUT"]
        assert later, f"no packet followed record {index}"
        kernel = later[0]
        if reply[9] == 1:
            assert _without_ip_id(reply) == _without_ip_id(kernel)
        else:
            assert reply == kernel
    if name.startswith("reject"):
        assert result.rejects, "the scenario rejects something"
    assert sent
