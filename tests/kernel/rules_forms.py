#!/usr/bin/env python3
"""What iptables itself prints for every rule form, command and restore the engine parses.

In one namespace (pctr-forms), each command line of COMMANDS runs through iptables-legacy
in order; the stdout, stderr and exit code of each, and for every -A the line
`iptables-legacy-save` then prints for the new rule; and the stderr, exit code and
resulting filter table of each iptables-restore input of RESTORES; all stored in
tests/data/rules/forms.json for tests/test_rules_forms.py.

    python3 tests/kernel/rules_forms.py          (root; iptables)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "data" / "rules" / "forms.json"
NS = "pctr-forms"

RULE_FORMS = [
    "-p tcp --dport 22", "-p TCP --dport 22", "-p 47", "-p 253", "-p all", "-p 0", "-p udp",
    "-s 1.2.3.4", "-s 1.2.3.4/16", "-s 10.1.2.3/8 -d 5.6.7.8/0", "! -s 1.2.3.4 ! -d 4.3.2.1/24",
    "-s 1.2.3.4/255.255.0.255", "-s 0.0.0.0/0", "-s 1.1.1.1,2.2.2.0/24 -d 3.3.3.3,4.4.4.4",
    "-s 0/0", "-d 10/8", "-s 10.1", "-s 1.2.3.4/255.255", "-p ALL -s 0/0",
    "-i eth+", "! -i lo", "-i +", "-f", "! -f", "! -p tcp",
    "-p tcp --sport 0:65535 --dport 10:", "-p tcp --dport :10", "-p tcp ! --dport 1000:2000",
    "-p tcp --sport 1:2 --dport 80 --syn", "-p tcp ! --syn", "-p tcp --tcp-flags ALL NONE",
    "-p tcp --tcp-flags SYN,ACK SYN,ACK", "-p tcp ! --tcp-flags FIN,ACK ACK", "-p tcp --tcp-option 2",
    "-p tcp --dport ssh", "-p tcp -m tcp", "-m tcp -p tcp --dport 1", "-p udp --sport 53",
    "-p udp -m udp ! --dport 7", "-p icmp --icmp-type any", "-p icmp ! --icmp-type 3",
    "-p icmp --icmp-type destination-unreachable", "-p icmp --icmp-type port-unreachable",
    "-p icmp --icmp-type echo-request", "-p icmp --icmp-type echo-reply", "-p icmp --icmp-type 3/255",
    "-p icmp --icmp-type 5", "-p icmp --icmp-type 11/1", "-p icmp --icmp-type time-exceeded",
    "-m state --state NEW", "-m state --state ESTABLISHED,RELATED",
    "-m state ! --state NEW,INVALID,UNTRACKED,RELATED,ESTABLISHED", "-m state --state UNTRACKED",
    "-m conntrack --ctstate NEW,ESTABLISHED --ctproto tcp",
    "-m conntrack --ctorigsrc 1.2.3.0/24 ! --ctorigdst 1.2.3.4 --ctreplsrc 5.5.5.5 --ctrepldst 6.6.6.6/8",
    "-m conntrack --ctorigsrcport 10 --ctorigdstport 20:30 ! --ctreplsrcport 5 --ctrepldstport 6",
    "-m conntrack --ctstatus EXPECTED,SEEN_REPLY,ASSURED,CONFIRMED --ctdir ORIGINAL",
    "-m conntrack ! --ctstatus ASSURED --ctdir REPLY", "-m conntrack ! --ctstate INVALID",
    "-p udp -m multiport --dports 53,1000:2000", "-p tcp -m multiport ! --sports 1,2,3",
    "-p udp -m multiport --ports 7", "-m limit", "-m limit --limit 10/s --limit-burst 5",
    "-m limit --limit 7/hour", "-m limit --limit 2/day", "-m limit --limit 1000/sec",
    "-m limit --limit 7/m", "-m limit --limit 3/minute --limit-burst 3", "-m limit --limit 5/h --limit-burst 10",
    "-m comment --comment abc", "-m comment --comment \"hi there\"", "-m comment --comment \"it's\"",
    "-m comment --comment \"a\\\"b\"", "-m mark --mark 0x10/0xf0", "-m mark ! --mark 5",
    "-m connmark --mark 7", "-m connmark ! --mark 0x1/0x3",
    "-m state --state NEW -p tcp --dport 22 -m comment --comment x",
    "-j ACCEPT", "-j DROP", "-j RETURN", "-p tcp -j REJECT --reject-with tcp-reset",
    "-j REJECT", "-j REJECT --reject-with icmp-net-unreachable", "-j REJECT --reject-with icmp-host-unreachable",
    "-j REJECT --reject-with icmp-proto-unreachable", "-j REJECT --reject-with icmp-net-prohibited",
    "-j REJECT --reject-with icmp-host-prohibited", "-j REJECT --reject-with icmp-admin-prohibited",
    "-j REJECT --reject-with port-unreachable", "-p tcp -j REJECT --reject-with tcp-rst",
    "-j LOG", "-j LOG --log-level 4", "-j LOG --log-level 0", "-j LOG --log-level debug",
    "-j LOG --log-prefix \"x y\" --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid",
    "-j LOG --log-prefix abc --log-level info", "-j MARK --set-mark 5", "-j MARK --set-mark 3/0xf",
    "-j MARK --set-xmark 2", "-j MARK --and-mark 5", "-j MARK --or-mark 5", "-j MARK --xor-mark 3",
    "-j CONNMARK --set-mark 4/4", "-j CONNMARK --set-xmark 4", "-j CONNMARK --save-mark",
    "-j CONNMARK --save-mark --mask 0xff", "-j CONNMARK --restore-mark",
    "-j CONNMARK --restore-mark --nfmask 0xf --ctmask 0xff",
    # refused forms
    "--foo", "-m foo", "-j FOO", "-p tcp --dport 99999", "-s 1.2.3.400", "-m limit --limit 3/fortnight",
    "-m limit --limit 20000/s", "-m state --state FOO", "-p icmp --icmp-type foo", "-p tcp --tcp-flags SYN",
    "-m multiport --dports 1,2", "-p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16",
    "-j REJECT --reject-with tcp-reset", "! -p udp --dport 5", "-p tcp -m udp --dport 3", "-j NOTRACK",
    "-j ACCEPT -j DROP", "-p tcp -p udp", "-s ! 1.2.3.4", "-p tcp --dport ! 22", "extra",
    "-j LOG --log-level DEBUG", "-m conntrack --ctstatus ASSURED --ctstatus SEEN_REPLY",
    "-p tcp -m multiport --sports 1,2 --dports 3", "-j REJECT --reject-with foo", "-p bogus",
]
RAW_FORMS = ["-j NOTRACK", "-p udp -j CT --notrack", "-j REJECT", "-j MARK --set-mark 1"]
MANGLE_FORMS = ["-j REJECT", "-j MARK --set-xmark 0x1/0x3", "-j CONNMARK --save-mark"]
COMMANDS = [
    "-N a", "-N a", "-X b", "-A a -j ACCEPT", "-X a", "-A INPUT -j a", "-F a", "-X a",
    "-D INPUT -j DROP", "-D INPUT 5", "-I INPUT 5 -j DROP", "-R INPUT 5 -j DROP", "-P a DROP",
    "-P INPUT RETURN", "-P INPUT FOO", "-E a INPUT", "-N b", "-E a b", "-E zz y", "-A OUTPUT -i lo",
    "-A INPUT -o lo", "-Z a", "-Z nope", "-L nope", "-A nope -j ACCEPT", "-A a -j a", "-A a -j b",
    "-A b -j a", "-S", "-D INPUT 1 -j ACCEPT", "-X INPUT", "-N INPUT", "-N ACCEPT", "-N a\tb",
    "-N 0123456789012345678901234567890", "-Q", "", "-A", "-I INPUT -p tcp -j ACCEPT",
    "-I INPUT 2 -p udp -j DROP", "-I INPUT 4 -s 1.2.3.4 -j DROP", "-R INPUT 1 -p icmp -j ACCEPT",
    "-S INPUT", "-D INPUT -p udp -j DROP", "-S", "-D INPUT 1", "-S INPUT", "-E b c", "-S",
    "-P FORWARD DROP", "-S FORWARD", "-F", "-S", "-X", "-X c", "-D INPUT 1", "-X a", "-X", "-S",
    "-L -n", "-L INPUT -n --line-numbers", "-t nat -L", "-t bogus -L", "-t raw -S",
    "-t mangle -A PREROUTING -j MARK --set-mark 1", "-t mangle -S", "-t mangle -Z", "-t raw -N x",
    "-t raw -L -n -v", "-t raw -X x",
    # counters given with -c, in every unit -L -v rounds them to
    "-A INPUT -c 99999 100000 -j ACCEPT", "-A INPUT -c 1234567 9876543210 -p tcp",
    "-I INPUT 1 -c 12345678901234 99999999999999 -j DROP", "-L INPUT -v", "-L INPUT -v -x",
    "-S INPUT -v", "-Z INPUT", "-L INPUT -v -n",
]

# iptables-restore inputs (each into a fresh filter table): its stderr and exit code.
RESTORES = [
    "*filter\n-A INPUT -j REJECT --reject-with tcp-reset\n-A INPUT -j ACCEPT\nCOMMIT\n",
    "*filter\n-A INPUT --foo\nCOMMIT\n",
    "*bogus\nCOMMIT\n",
    "*filter\n-A INPUT -j ACCEPT\n",
    "*filter\n:INPUT BLAH [0:0]\nCOMMIT\n",
    "*filter\n:foo ACCEPT [0:0]\nCOMMIT\n",
    "*filter\n:a - [0:0]\n-A INPUT -j a\n-A a -j a\nCOMMIT\n",
    "*filter\n-A INPUT -m comment --comment 'x y' -j ACCEPT\nCOMMIT\n",
    "*filter\n-A INPUT -p tcp --dport 99999\nCOMMIT\n",
    "*filter\n-A INPUT -m foo\nCOMMIT\n",
    "*filter\n# a comment\n\n-A INPUT -j FOO\nCOMMIT\n",
    "*raw\n-A PREROUTING -j NOTRACK\nCOMMIT\n*mangle\n-A INPUT -j REJECT\nCOMMIT\n",
    "*filter\n-A OUTPUT -i lo -j ACCEPT\nCOMMIT\n",
    "*filter\n-A INPUT -s 1.1.1.1,2.2.2.0/24 -d 3.3.3.3 -j DROP\n-N x\n-I INPUT 2 -j ACCEPT\n-D INPUT 1\n-P FORWARD DROP\nCOMMIT\n",
    "*filter\n:INPUT DROP [5:6]\n[1:2] -A INPUT -j ACCEPT\n-A INPUT -c 3 4 -j DROP\nCOMMIT\n",
]

RESET = ("iptables-legacy -F; iptables-legacy -X; iptables-legacy -P INPUT ACCEPT; "
         "iptables-legacy -P FORWARD ACCEPT; iptables-legacy -P OUTPUT ACCEPT; "
         "iptables-legacy -t raw -F; iptables-legacy -t mangle -F")


def sh(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


def main() -> int:
    sh("ip", "netns", "del", NS)
    sh("ip", "netns", "add", NS)
    data: dict = {"forms": [], "commands": [], "restores": []}
    try:
        def ns(*argv: str) -> subprocess.CompletedProcess:
            return sh("ip", "netns", "exec", NS, *argv)

        def form(table: str, chain: str, spec: str) -> None:
            done = ns("sh", "-c", f"iptables-legacy -t {table} -A {chain} {spec}")
            saved = ns("iptables-legacy-save", "-t", table).stdout
            lines = [l for l in saved.splitlines() if l.startswith("-A ")]
            data["forms"].append({"table": table, "chain": chain, "spec": spec,
                                  "rc": done.returncode, "stderr": done.stderr,
                                  "saved": lines[-1] if done.returncode == 0 and lines else None})
            ns("iptables-legacy", "-t", table, "-F")
        for spec in RULE_FORMS:
            chain = "FORWARD" if (" -i " in f" {spec}" or " -o " in f" {spec}") else "INPUT"
            form("filter", chain, spec)
        for spec in RAW_FORMS:
            form("raw", "PREROUTING", spec)
        for spec in MANGLE_FORMS:
            form("mangle", "INPUT", spec)
        for text in RESTORES:
            ns("sh", "-c", RESET)
            done = subprocess.run(["ip", "netns", "exec", NS, "iptables-legacy-restore"], input=text,
                                  capture_output=True, text=True)
            saved = ns("iptables-legacy-save", "-c", "-t", "filter").stdout
            data["restores"].append({"input": text, "rc": done.returncode, "stderr": done.stderr,
                                     "save": "".join(l + "\n" for l in saved.splitlines()
                                                     if not l.startswith("#"))})
        ns("sh", "-c", RESET)
        for line in COMMANDS:
            done = ns("sh", "-c", f"iptables-legacy {line}")
            data["commands"].append({"argv": line, "rc": done.returncode,
                                     "stdout": done.stdout, "stderr": done.stderr})
    finally:
        sh("ip", "netns", "del", NS)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"rules_forms: {len(data['forms'])} forms, {len(data['commands'])} commands, "
          f"{len(data['restores'])} restores -> {OUT}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
