#!/usr/bin/env python3
"""Kernel reference data for the rules engine: iptables rulesets run on the real kernel.

For every scenario: namespaces pctr-<n>a (the host under test) and pctr-<n>b (its peer),
a veth pair va (10.99.0.1/24) - vb (10.99.0.2/24), the scenario's ruleset loaded with
iptables-legacy-restore in A, the NFLOG recorder of rules_nflog.py in A (each packet's hook,
interfaces, mark, datagram and conntrack classification as the rules saw it), tcpdump -i any
in A, the traffic, then `iptables-legacy-save -c`, `iptables-legacy -L -n -v -x
--line-numbers` per table, -S, and /proc/net/nf_conntrack of A. Stored under
tests/data/rules/<name>/: rules (the input), save.txt, list.txt, records.json, capture.pcap,
nf_conntrack.txt, ifaces.json.

    python3 tests/kernel/rules_oracle.py [--list] [NAME ...]     (root; iptables, nft, tcpdump)
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rules_nflog  # noqa: E402

DATA = HERE.parent / "data" / "rules"
A_ADDR, B_ADDR = "10.99.0.1", "10.99.0.2"
NS_PREFIX = "pctr-"

FILTER_HEAD = "*filter\n:INPUT {i} [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT {o} [0:0]\n"


def filt(body: str, inp: str = "ACCEPT", out: str = "ACCEPT") -> str:
    return FILTER_HEAD.format(i=inp, o=out) + body.strip() + "\nCOMMIT\n"


RC_FIREWALL = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
:allowed - [0:0]
:bad_tcp_packets - [0:0]
:icmp_packets - [0:0]
:tcp_packets - [0:0]
:udp_packets - [0:0]
-A INPUT -p tcp -j bad_tcp_packets
-A INPUT -i lo -j ACCEPT
-A INPUT -d 10.99.0.1 -m state --state ESTABLISHED,RELATED -j ACCEPT
-A INPUT -p tcp -i va -j tcp_packets
-A INPUT -p udp -i va -j udp_packets
-A INPUT -p icmp -i va -j icmp_packets
-A INPUT -m limit --limit 3/minute --limit-burst 3 -j LOG --log-level debug --log-prefix "IPT INPUT packet died: "
-A OUTPUT -p tcp -j bad_tcp_packets
-A OUTPUT -o lo -j ACCEPT
-A OUTPUT -s 10.99.0.1 -j ACCEPT
-A OUTPUT -m limit --limit 3/minute --limit-burst 3 -j LOG --log-level debug --log-prefix "IPT OUTPUT packet died: "
-A allowed -p tcp --syn -j ACCEPT
-A allowed -p tcp -m state --state ESTABLISHED,RELATED -j ACCEPT
-A allowed -p tcp -j DROP
-A bad_tcp_packets -p tcp --tcp-flags SYN,ACK SYN,ACK -m state --state NEW -j REJECT --reject-with tcp-reset
-A bad_tcp_packets -p tcp ! --syn -m state --state NEW -j LOG --log-prefix "New not syn:"
-A bad_tcp_packets -p tcp ! --syn -m state --state NEW -j DROP
-A icmp_packets -p icmp --icmp-type 8 -j ACCEPT
-A icmp_packets -p icmp --icmp-type 11 -j ACCEPT
-A tcp_packets -p tcp --dport 21 -j allowed
-A tcp_packets -p tcp --dport 22 -j allowed
-A tcp_packets -p tcp --dport 80 -j allowed
-A tcp_packets -p tcp --dport 113 -j allowed
-A udp_packets -p udp --sport 53 -j ACCEPT
-A udp_packets -p udp --dport 7000 -j ACCEPT
COMMIT
"""

# name -> (ruleset, traffic steps). A step is (kind, args...) run by `traffic()`.
SCENARIOS: dict[str, tuple[str, list[tuple]]] = {
    "policy_accept_counts": (filt("-A INPUT -p tcp --dport 7001 -j ACCEPT\n-A INPUT -p udp"),
                             [("tcp", 7001, 3), ("udp", 7002, 2, True), ("ping", 2)]),
    "policy_drop_input": (filt("-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n"
                               "-A INPUT -p tcp --dport 7001 -j ACCEPT\n-A INPUT -i lo -j ACCEPT",
                               inp="DROP"),
                          [("tcp", 7001, 2), ("tcp_closed", 7003), ("ping", 2), ("udp", 7002, 1, False)]),
    "nested_three_deep_return": (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        ":one - [0:0]\n:two - [0:0]\n:three - [0:0]\n"
        "-A INPUT -i va -j one\n-A INPUT -i va -p tcp\n"
        "-A one -p icmp\n-A one -j two\n-A one -p tcp\n"
        "-A two -p udp -j RETURN\n-A two -j three\n-A two -p tcp\n"
        "-A three -p tcp --dport 7001\n-A three -p tcp -j RETURN\n-A three -p icmp -j DROP\n"
        "COMMIT\n",
        [("tcp", 7001, 2), ("udp", 7002, 2, True), ("ping", 2)]),
    "goto_returns_to_caller_of_caller": (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        ":first - [0:0]\n:second - [0:0]\n:target - [0:0]\n"
        "-A INPUT -i va -j first\n-A INPUT -i va\n"
        "-A first -g second\n-A first -p tcp\n"
        "-A second -p tcp -g target\n-A second -p udp\n"
        "-A target -p tcp --dport 7001 -j RETURN\n-A target -p tcp\n"
        "COMMIT\n",
        [("tcp", 7001, 2), ("udp", 7002, 1, True)]),
    "goto_from_builtin_policy_drop": (
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:g - [0:0]\n"
        "-A INPUT -i lo -j ACCEPT\n-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n"
        "-A INPUT -p tcp -g g\n-A INPUT -j ACCEPT\n"
        "-A g -p tcp --dport 7001 -j ACCEPT\n-A g -p tcp --dport 7003 -j RETURN\n"
        "COMMIT\n",
        [("tcp", 7001, 2), ("tcp_closed", 7003), ("tcp_closed", 7004), ("udp", 7002, 1, True)]),
    "return_in_builtin_applies_policy": (
        filt("-A INPUT -i va -p icmp -j RETURN\n-A INPUT -m state --state ESTABLISHED -j ACCEPT\n"
             "-A INPUT -p tcp --dport 7001 -j ACCEPT\n-A INPUT -i lo -j ACCEPT", inp="DROP"),
        [("ping", 2), ("tcp", 7001, 2)]),
    "state_every_combination": (
        filt("\n".join(f"-A {chain} -m state --state {s}"
                       for chain in ("INPUT", "OUTPUT")
                       for s in ("NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED",
                                 "NEW,ESTABLISHED", "RELATED,ESTABLISHED", "NEW,RELATED",
                                 "INVALID,NEW", "INVALID,UNTRACKED",
                                 "NEW,RELATED,ESTABLISHED", "INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED"))
             + "\n-A INPUT -m state ! --state NEW\n-A OUTPUT -m state ! --state ESTABLISHED"),
        [("tcp", 7001, 2), ("tcp_closed", 7003), ("udp", 7002, 2, True), ("ping", 2),
         ("forge", "A", 7001), ("icmp_unreach_to_a",), ("lo_tcp", 7005, 1)]),
    "conntrack_match": (
        filt("-A INPUT -m conntrack --ctstate NEW --ctproto tcp --ctorigdst 10.99.0.1 --ctorigdstport 7001\n"
             "-A INPUT -m conntrack --ctstate ESTABLISHED --ctdir ORIGINAL\n"
             "-A INPUT -m conntrack --ctdir REPLY\n"
             "-A INPUT -m conntrack --ctstatus ASSURED\n"
             "-A INPUT -m conntrack --ctstatus SEEN_REPLY -m conntrack ! --ctstatus ASSURED\n"
             "-A INPUT -m conntrack --ctorigsrc 10.99.0.0/24 ! --ctorigsrcport 7001\n"
             "-A INPUT -m conntrack --ctreplsrc 10.99.0.1 --ctrepldst 10.99.0.2\n"
             "-A INPUT -m conntrack --ctproto udp\n"
             "-A OUTPUT -m conntrack --ctstate ESTABLISHED --ctdir REPLY\n"
             "-A OUTPUT -m conntrack --ctstatus CONFIRMED\n"
             "-A OUTPUT -m conntrack ! --ctstatus CONFIRMED --ctproto icmp\n"
             "-A OUTPUT -m conntrack --ctstate NEW --ctorigsrcport 7006:7010\n"),
        [("tcp", 7001, 3), ("udp", 7002, 3, True), ("ping", 2), ("tcp_out", 7008)]),
    "invalid_dropped": (
        filt("-A INPUT -m state --state INVALID -j DROP\n-A INPUT -p tcp\n"
             "-A OUTPUT -m state --state INVALID -j DROP"),
        [("forge", "SA", 7001), ("forge", "A", 7001), ("forge", "FA", 7001),
         ("icmp_unreach_to_a",), ("tcp", 7001, 1)]),
    "reject_icmp_variants": (
        filt("-A INPUT -p udp --dport 7010 -j REJECT\n"
             "-A INPUT -p udp --dport 7011 -j REJECT --reject-with icmp-net-unreachable\n"
             "-A INPUT -p udp --dport 7012 -j REJECT --reject-with icmp-host-unreachable\n"
             "-A INPUT -p udp --dport 7013 -j REJECT --reject-with icmp-proto-unreachable\n"
             "-A INPUT -p udp --dport 7014 -j REJECT --reject-with icmp-net-prohibited\n"
             "-A INPUT -p udp --dport 7015 -j REJECT --reject-with icmp-host-prohibited\n"
             "-A INPUT -p tcp --dport 7016 -j REJECT --reject-with icmp-admin-prohibited\n"
             "-A OUTPUT -p icmp\n-A OUTPUT -m state --state RELATED"),
        [("udp", 7010, 1, False), ("sleep", 1.1), ("udp", 7011, 1, False), ("sleep", 1.1),
         ("udp", 7012, 1, False), ("sleep", 1.1), ("udp", 7013, 1, False), ("sleep", 1.1),
         ("udp", 7014, 1, False), ("sleep", 1.1), ("udp", 7015, 1, False), ("sleep", 1.1),
         ("tcp_closed", 7016)]),
    "reject_tcp_reset": (
        filt("-A INPUT -p tcp --dport 7020 -j REJECT --reject-with tcp-reset\n"
             "-A INPUT -p tcp --tcp-flags SYN,ACK SYN,ACK -j REJECT --reject-with tcp-reset\n"
             "-A OUTPUT -p tcp --tcp-flags RST RST\n-A OUTPUT -m state --state RELATED\n"
             "-A OUTPUT -m state --state INVALID\n-A OUTPUT -m state --state ESTABLISHED"),
        [("tcp_closed", 7020), ("forge", "SA", 7021), ("forge", "A", 7020), ("forge", "PA", 7020)]),
    "notrack_raw": (
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        "-A PREROUTING -p udp --dport 7030 -j NOTRACK\n"
        "-A PREROUTING -p icmp -j CT --notrack\n"
        "-A OUTPUT -p udp --sport 7030 -j NOTRACK\n"
        "COMMIT\n" + filt("-A INPUT -m state --state UNTRACKED\n-A INPUT -m conntrack --ctstate UNTRACKED\n"
                          "-A INPUT -m state --state NEW\n-A OUTPUT -m state --state UNTRACKED\n"
                          "-A OUTPUT -m state --state ESTABLISHED"),
        [("udp", 7030, 2, True), ("udp", 7031, 2, True), ("ping", 2)]),
    "limit_burst": (
        filt("-A INPUT -p icmp -m limit --limit 3/min --limit-burst 3 -j LOG --log-prefix \"ping: \"\n"
             "-A INPUT -p icmp -m limit --limit 2/sec --limit-burst 2\n"
             "-A INPUT -p icmp -m limit --limit 3/minute --limit-burst 3 -j ACCEPT\n"
             "-A INPUT -p icmp -j DROP"),
        [("ping_fast", 12, 0.1)]),
    "log_forms": (
        filt("-A INPUT -p tcp -j LOG --log-prefix \"in tcp: \" --log-level 7 --log-tcp-sequence --log-tcp-options\n"
             "-A INPUT -p icmp -j LOG --log-ip-options\n-A OUTPUT -j LOG --log-uid --log-prefix out\n"
             "-A INPUT -p udp -j LOG --log-level info"),
        [("tcp", 7001, 1), ("ping", 1), ("udp", 7002, 1, True)]),
    "multiport": (
        filt("-A INPUT -p tcp -m multiport --dports 7001,7040:7042 -j ACCEPT\n"
             "-A INPUT -p udp -m multiport --sports 1000:1100,7002\n"
             "-A INPUT -p udp -m multiport ! --ports 7002,7003\n"
             "-A INPUT -p tcp -m multiport --ports 7001\n-A OUTPUT -p tcp -m multiport --sports 7040:7045"),
        [("tcp", 7001, 2), ("tcp", 7041, 1), ("udp", 7002, 1, True), ("udp", 7050, 1, True)]),
    "marks_mangle": (
        "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
        ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        "-A PREROUTING -p tcp -j MARK --set-mark 0x10\n"
        "-A PREROUTING -p udp -j MARK --set-xmark 0x3/0xf\n"
        "-A PREROUTING -p icmp -j MARK --or-mark 0x100\n"
        "-A PREROUTING -p tcp -j MARK --and-mark 0x30\n"
        "-A PREROUTING -p udp -j MARK --xor-mark 0x1\n"
        "-A INPUT -m mark --mark 0x10\n-A INPUT -m mark --mark 0x2/0xf\n-A INPUT -m mark ! --mark 0x0\n"
        "-A POSTROUTING -m mark --mark 0x0\n"
        "COMMIT\n" + filt("-A INPUT -m mark --mark 0x100 -j ACCEPT\n-A INPUT -m mark --mark 0x10"),
        [("tcp", 7001, 2), ("udp", 7002, 2, True), ("ping", 2)]),
    "connmark_save_restore": (
        "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
        ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        "-A PREROUTING -j CONNMARK --restore-mark\n"
        "-A PREROUTING -m mark --mark 0x0 -p tcp --dport 7001 -j MARK --set-mark 0x7\n"
        "-A PREROUTING -j CONNMARK --save-mark\n"
        "-A PREROUTING -p udp -j CONNMARK --set-mark 0x5/0xf\n"
        "-A OUTPUT -j CONNMARK --restore-mark --mask 0xff\n"
        "-A OUTPUT -m mark --mark 0x7\n-A OUTPUT -m connmark --mark 0x5\n"
        "COMMIT\n" + filt("-A INPUT -m connmark --mark 0x7\n-A INPUT -m connmark ! --mark 0x7\n"
                          "-A INPUT -m mark --mark 0x7"),
        [("tcp", 7001, 3), ("udp", 7002, 2, True), ("ping", 1)]),
    "addresses_interfaces_protocols": (
        filt("-A INPUT -s 10.99.0.2,10.98.0.0/16 -p tcp\n-A INPUT ! -s 10.99.0.0/24\n"
             "-A INPUT -d 10.99.0.1/255.255.0.255\n-A INPUT -i va+\n-A INPUT ! -i lo\n"
             "-A INPUT -i lo -p 6\n-A INPUT ! -p tcp\n-A INPUT -p all\n-A INPUT -f\n-A INPUT ! -f\n"
             "-A OUTPUT -o va\n-A OUTPUT ! -o v+\n-A OUTPUT -d 10.99.0.2 -p icmp --icmp-type echo-reply\n"
             "-A INPUT -p icmp --icmp-type echo-request\n-A INPUT -p icmp ! --icmp-type 0\n"
             "-A INPUT -p tcp --sport 1024:65535 --dport 7001\n-A INPUT -p tcp ! --dport 7001\n"
             "-A INPUT -p tcp --syn\n-A INPUT -p tcp --tcp-flags ALL ACK\n-A INPUT -p tcp ! --tcp-flags FIN,ACK ACK\n"
             "-A INPUT -p udp --dport 7002:7003\n-A INPUT -p 17 ! --sport 7000"),
        [("tcp", 7001, 2), ("udp", 7002, 1, True), ("ping", 2), ("lo_tcp", 7005, 1)]),
    "rc_firewall": (RC_FIREWALL,
                    [("tcp", 22, 2), ("tcp_closed", 80), ("tcp_closed", 25), ("forge", "A", 22),
                     ("forge", "SA", 22), ("udp", 7000, 1, True), ("udp", 7001, 1, False),
                     ("ping", 2), ("lo_tcp", 7005, 1), ("forge", "A", 23), ("forge", "A", 24)]),
    "comment_and_empty_chains": (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        ":empty - [0:0]\n:zz_last - [0:0]\n:AAA - [0:0]\n"
        "-A INPUT -m comment --comment \"jump to an empty chain\" -j empty\n"
        "-A INPUT -p tcp -m comment --comment plain -j zz_last\n"
        "-A zz_last -m comment --comment \"it's \\\"quoted\\\"\" -j AAA\n-A AAA -j RETURN\n"
        "COMMIT\n",
        [("tcp", 7001, 1), ("ping", 1)]),
}


# -- running one scenario (inside namespace A) ------------------------------------------------
def run(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.returncode} {done.stderr.strip()}")
    return done.stdout


def in_b(ns_b: str, code: str, timeout: float = 10) -> None:
    prelude = f"import sys, socket, time; sys.path.insert(0, {str(HERE)!r}); import forge\n"
    subprocess.run(["ip", "netns", "exec", ns_b, "python3", "-c", prelude + code],
                   capture_output=True, timeout=timeout)


def servers(ports_tcp: set[int], ports_udp: set[int], stop: threading.Event) -> list:
    import socket as s
    socks = []
    for port in ports_tcp:
        sock = s.socket()
        sock.setsockopt(s.SOL_SOCKET, s.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(16)
        sock.settimeout(0.2)
        socks.append(sock)

        def serve(sock=sock):
            while not stop.is_set():
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                conn.settimeout(2)
                try:
                    while data := conn.recv(4096):
                        conn.sendall(data)
                except OSError:
                    pass
                conn.close()
        threading.Thread(target=serve, daemon=True).start()
    for port in ports_udp:
        sock = s.socket(s.AF_INET, s.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
        sock.settimeout(0.2)
        socks.append(sock)

        def echo(sock=sock):
            while not stop.is_set():
                try:
                    data, peer = sock.recvfrom(4096)
                    sock.sendto(data, peer)
                except OSError:
                    continue
        threading.Thread(target=echo, daemon=True).start()
    return socks


def traffic(ns_b: str, steps: list[tuple]) -> None:
    sport = 41000
    for step in steps:
        kind, args = step[0], step[1:]
        sport += 1
        if kind == "tcp":
            port, rounds = args
            in_b(ns_b, f"c = socket.socket(); c.settimeout(3); c.bind(({B_ADDR!r}, {sport}))\n"
                       f"c.connect(({A_ADDR!r}, {port}))\n"
                       f"for i in range({rounds}):\n    c.sendall(b'x' * (i + 1)); c.recv(100)\n"
                       "c.close(); time.sleep(0.3)")
        elif kind == "tcp_closed":
            in_b(ns_b, f"c = socket.socket(); c.settimeout(1.5); c.bind(({B_ADDR!r}, {sport}))\n"
                       f"try:\n    c.connect(({A_ADDR!r}, {args[0]}))\nexcept OSError:\n    pass")
        elif kind == "tcp_out":
            import socket as s
            c = s.socket()
            c.settimeout(1.5)
            c.bind((A_ADDR, args[0]))
            try:
                c.connect((B_ADDR, 9))
            except OSError:
                pass
            c.close()
        elif kind == "udp":
            port, count, expect_reply = args
            in_b(ns_b, f"u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(0.5)\n"
                       f"u.bind(({B_ADDR!r}, {sport}))\n"
                       f"for i in range({count}):\n    u.sendto(b'y' * (i + 3), ({A_ADDR!r}, {port}))\n"
                       f"    try:\n        u.recv(100)\n    except OSError:\n        pass\n")
        elif kind in ("ping", "ping_fast"):
            count = args[0]
            interval = args[1] if kind == "ping_fast" else 0.2
            subprocess.run(["ip", "netns", "exec", ns_b, "ping", "-c", str(count), "-i",
                            str(interval), "-W", "1", A_ADDR], capture_output=True)
        elif kind == "forge":
            letters, port = args
            in_b(ns_b, f"r = forge.RawSender()\n"
                       f"seg = forge.tcp_segment({B_ADDR!r}, {A_ADDR!r}, {sport}, {port}, "
                       f"forge.flags_from({letters!r}), 1000, 2000)\n"
                       f"r.send(forge.ipv4({B_ADDR!r}, {A_ADDR!r}, 6, seg, ident={sport}))\n"
                       "time.sleep(0.3)")
        elif kind == "icmp_unreach_to_a":
            in_b(ns_b, "r = forge.RawSender()\n"
                       f"inner = forge.ipv4({A_ADDR!r}, {B_ADDR!r}, 17, "
                       f"forge.udp_datagram({A_ADDR!r}, {B_ADDR!r}, 5555, 6666, b'zz'))\n"
                       f"r.send(forge.ipv4({B_ADDR!r}, {A_ADDR!r}, 1, forge.icmp_error(3, 3, inner)))\n"
                       "time.sleep(0.3)")
        elif kind == "lo_tcp":
            import socket as s
            port, rounds = args
            c = s.socket()
            c.settimeout(2)
            c.bind(("127.0.0.1", sport))
            c.connect(("127.0.0.1", port))
            for i in range(rounds):
                c.sendall(b"z" * (i + 1))
                c.recv(100)
            c.close()
            time.sleep(0.3)
        elif kind == "sleep":
            time.sleep(args[0])
        time.sleep(0.1)


def worker(name: str, ns_b: str, out: Path) -> None:
    """Runs inside namespace A."""
    rules, steps = SCENARIOS[name]
    listener = rules_nflog.NflogListener()
    run("nft", "-f", "-", stdin=rules_nflog.nft_recorder())
    run("iptables-legacy-restore", stdin=rules)
    tcp_ports = {s[1] for s in steps if s[0] in ("tcp", "lo_tcp")}
    udp_ports = {s[1] for s in steps if s[0] == "udp" and s[3]}
    stop = threading.Event()
    socks = servers(tcp_ports, udp_ports, stop)
    dump = subprocess.Popen(["tcpdump", "-i", "any", "-w", str(out / "capture.pcap"), "-U",
                             "--immediate-mode", "-s", "0", "-B", "65536"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert dump.stderr is not None
    dump.stderr.readline()                         # "listening on any ..."
    records: list[dict] = []
    collector = threading.Thread(target=lambda: records.extend(_collect(listener, stop)))
    collector.start()
    try:
        traffic(ns_b, steps)
        time.sleep(0.5)
    finally:
        stop.set()
        collector.join()
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
        for sock in socks:
            sock.close()
    (out / "records.json").write_text(json.dumps(records, indent=0) + "\n")
    (out / "save.txt").write_text(run("iptables-legacy-save", "-c"))
    listing = ""
    for table in ("raw", "mangle", "filter"):
        if f"*{table}" in rules:
            listing += f"## -t {table} -L -n -v -x --line-numbers\n"
            listing += run("iptables-legacy", "-t", table, "-L", "-n", "-v", "-x", "--line-numbers")
            listing += f"## -t {table} -L -v\n" + run("iptables-legacy", "-t", table, "-L", "-v")
            listing += f"## -t {table} -S\n" + run("iptables-legacy", "-t", table, "-S")
    (out / "list.txt").write_text(listing)
    (out / "nf_conntrack.txt").write_text(Path("/proc/net/nf_conntrack").read_text())
    links = json.loads(run("ip", "-j", "link", "show"))
    (out / "ifaces.json").write_text(json.dumps({str(l["ifindex"]): l["ifname"] for l in links}) + "\n")


def _collect(listener: rules_nflog.NflogListener, stop: threading.Event) -> list[dict]:
    got: list[dict] = []
    while not stop.is_set():
        got.extend(listener.drain())
    got.extend(listener.drain())
    return got


def scenario(name: str) -> None:
    index = list(SCENARIOS).index(name)
    ns_a, ns_b = f"{NS_PREFIX}{index}a", f"{NS_PREFIX}{index}b"
    out = DATA / name
    out.mkdir(parents=True, exist_ok=True)
    for ns in (ns_a, ns_b):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
    try:
        run("ip", "link", "add", "va", "netns", ns_a, "type", "veth", "peer", "name", "vb",
            "netns", ns_b)
        run("ip", "-n", ns_a, "addr", "add", f"{A_ADDR}/24", "dev", "va")
        run("ip", "-n", ns_b, "addr", "add", f"{B_ADDR}/24", "dev", "vb")
        for ns, dev in ((ns_a, "va"), (ns_b, "vb")):
            run("ip", "-n", ns, "link", "set", dev, "up")
            # no offloads: the capture then holds the segments the hooks saw
            subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso",
                            "off", "gro", "off"], capture_output=True)
        (out / "rules").write_text(SCENARIOS[name][0])
        run("ip", "netns", "exec", ns_a, sys.executable, __file__, "--worker", name, ns_b)
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        worker(argv[1], argv[2], DATA / argv[1])
        return 0
    if argv[:1] == ["--list"]:
        print("\n".join(SCENARIOS))
        return 0
    names = argv or list(SCENARIOS)
    for name in names:
        if name not in SCENARIOS:
            print(f"rules_oracle: no scenario {name}", file=sys.stderr)
            return 2
        print(f"rules_oracle: {name}", file=sys.stderr)
        scenario(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
