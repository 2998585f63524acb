#!/usr/bin/env python3
"""Kernel reference data for the conntrack helpers: FTP, TFTP and IRC DCC on a real kernel.

The machinery of scenarios.py (a fresh namespace, lo, the nft ruleset whose DSCP marks
carry each packet's state, tcpdump on lo, the snapshot), with the helper attached by an
nft `ct helper` object (kernels since 6.0 attach none by port), and the expectation table
(/proc/net/nf_conntrack_expect, with the table) read mid-traffic while the expectation
exists and again at the end.  Stored under tests/data/kernel_helpers/<name>/.

    PCT_NS_PREFIX=pcth- python3 tests/kernel/helper_scenarios.py [--list] [NAME ...]

Real sockets on 127.0.0.1 with fixed ports; every FTP session logs in first, as clients do
(the helper never reads the first line of either direction).
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scenarios  # noqa: E402
from scenarios import (LOCAL, Cleanup, Scenario, closing, exchange, pause,  # noqa: E402
                       take_expect_snapshot, tcp_client, tcp_connected_pair, tcp_listener,
                       udp_socket)

DATA_DIR = HERE.parent / "data" / "kernel_helpers"
FTP = (("ftp", "tcp", 21),)
HELPER_SCENARIOS: dict[str, Scenario] = {}

CONTROL_SPORT = 42021           # the FTP client's control port
DATA_PORT = 51210               # the data port announced


def helper_scenario(description: str, **options) -> Callable:
    def register(traffic: Callable[[], Cleanup]) -> Callable[[], Cleanup]:
        HELPER_SCENARIOS[traffic.__name__] = Scenario(traffic.__name__, description, traffic,
                                                      **options)
        return traffic
    return register


def ftp_login() -> tuple[socket.socket, socket.socket, socket.socket]:
    """Listener on 21, client from CONTROL_SPORT, banner and login done."""
    server = tcp_listener(21)
    client, conn = tcp_connected_pair(server, CONTROL_SPORT)
    conn.sendall(b"220 test FTP\r\n")
    assert client.recv(4096) == b"220 test FTP\r\n"
    pause()
    exchange(client, conn, b"USER anonymous\r\n", b"331 Password please\r\n")
    exchange(client, conn, b"PASS guest\r\n", b"230 Logged in\r\n")
    return server, client, conn


def transfer(sender: socket.socket, receiver: socket.socket) -> None:
    sender.sendall(b"file contents\n" * 20)
    got = b""
    while len(got) < 280:
        got += receiver.recv(4096)
    pause()
    sender.close()
    assert receiver.recv(4096) == b""
    pause()
    receiver.close()
    pause()


def passive(request: bytes, reply: bytes, connect_port: int) -> Cleanup:
    """PASV or EPSV, the reply naming DATA_PORT, then the client connects to connect_port."""
    server, client, conn = ftp_login()
    data_listener = tcp_listener(DATA_PORT)
    exchange(client, conn, request, reply)
    take_expect_snapshot("announced")
    if connect_port == DATA_PORT:
        data_client, data_conn = tcp_connected_pair(data_listener, 42100)
        take_expect_snapshot("data connected")
        transfer(data_conn, data_client)
    else:
        other = tcp_listener(connect_port)
        data_client, data_conn = tcp_connected_pair(other, 42100)
        take_expect_snapshot("data connected")
        transfer(data_conn, data_client)
        other.close()
    exchange(client, conn, b"QUIT\r\n", b"221 Goodbye\r\n")
    return closing(server, client, conn, data_listener)


def active(command: bytes) -> Cleanup:
    """PORT or EPRT naming DATA_PORT; the server connects back from port 20."""
    server, client, conn = ftp_login()
    data_listener = tcp_listener(DATA_PORT)
    exchange(client, conn, command, b"200 Command okay\r\n")
    take_expect_snapshot("announced")
    from_20 = tcp_client(20)
    from_20.connect((LOCAL, DATA_PORT))
    data_conn, _ = data_listener.accept()
    pause()
    take_expect_snapshot("data connected")
    transfer(from_20, data_conn)
    exchange(client, conn, b"QUIT\r\n", b"221 Goodbye\r\n")
    return closing(server, client, conn, data_listener)


@helper_scenario("FTP active: PORT 127,0,0,1,200,10 after login; the server connects from "
                 "port 20 to 51210 (RELATED), sends a file, closes.", helpers=FTP)
def ftp_active_port() -> Cleanup:
    return active(b"PORT 127,0,0,1,200,10\r\n")


@helper_scenario("FTP active, RFC 2428: EPRT |1|127.0.0.1|51210|; the server connects back.",
                 helpers=FTP)
def ftp_active_eprt() -> Cleanup:
    return active(b"EPRT |1|127.0.0.1|51210|\r\n")


@helper_scenario("FTP passive: PASV, 227 (127,0,0,1,200,10); the client connects to 51210.",
                 helpers=FTP)
def ftp_passive_pasv() -> Cleanup:
    return passive(b"PASV\r\n", b"227 Entering Passive Mode (127,0,0,1,200,10).\r\n", DATA_PORT)


@helper_scenario("FTP passive, RFC 2428: EPSV, 229 (|||51210|); the client connects.",
                 helpers=FTP)
def ftp_passive_epsv() -> Cleanup:
    return passive(b"EPSV\r\n", b"229 Entering Extended Passive Mode (|||51210|)\r\n", DATA_PORT)


@helper_scenario("FTP passive, the data connection to the wrong port (51211, not the 51210 "
                 "announced): NEW, and the expectation stays.", helpers=FTP)
def ftp_wrong_port() -> Cleanup:
    return passive(b"PASV\r\n", b"227 Entering Passive Mode (127,0,0,1,200,10).\r\n",
                   DATA_PORT + 1)


@helper_scenario("FTP: two PASV in a row; ftp allows one expectation per master, so the "
                 "second (51211) replaces the first (51210); nobody connects.", helpers=FTP)
def ftp_second_pasv_replaces() -> Cleanup:
    server, client, conn = ftp_login()
    exchange(client, conn, b"PASV\r\n", b"227 Entering Passive Mode (127,0,0,1,200,10).\r\n")
    take_expect_snapshot("first")
    exchange(client, conn, b"PASV\r\n", b"227 Entering Passive Mode (127,0,0,1,200,11).\r\n")
    take_expect_snapshot("second")
    return closing(server, client, conn)


@helper_scenario("TFTP read request 127.0.0.1:42069 -> :69; the server answers from port "
                 "50069 (RELATED) and the client acknowledges.", helpers=(("tftp", "udp", 69),))
def tftp_read() -> Cleanup:
    client, server = udp_socket(42069), udp_socket(69)
    client.sendto(b"\x00\x01file.bin\x00octet\x00", (LOCAL, 69))
    server.recvfrom(4096)
    pause()
    take_expect_snapshot("requested")
    answer = udp_socket(50069)
    answer.sendto(b"\x00\x03\x00\x01" + b"data" * 10, (LOCAL, 42069))
    client.recvfrom(4096)
    pause()
    client.sendto(b"\x00\x04\x00\x01", (LOCAL, 50069))
    answer.recvfrom(4096)
    pause()
    take_expect_snapshot("answered")
    return closing(client, server, answer)


@helper_scenario("IRC DCC SEND: the client (42667 -> 6667) offers file.txt at 127.0.0.1:5000 "
                 "in a PRIVMSG; a peer connects to 5000 (RELATED).",
                 helpers=(("irc", "tcp", 6667),))
def irc_dcc_send() -> Cleanup:
    server = tcp_listener(6667)
    client, conn = tcp_connected_pair(server, 42667)
    exchange(client, conn, b"NICK alice\r\nUSER alice 0 * :Alice\r\n", b":srv 001 alice :Hi\r\n")
    offer = b"PRIVMSG bob :\x01DCC SEND file.txt 2130706433 5000 280\x01\r\n"
    client.sendall(offer)
    assert conn.recv(4096) == offer
    pause()
    take_expect_snapshot("offered")
    dcc = tcp_listener(5000)
    peer, sending = tcp_connected_pair(dcc, 42500)
    take_expect_snapshot("connected")
    transfer(sending, peer)
    return closing(server, client, conn, dcc)


def run(sc: Scenario, out_root: Path) -> str:
    return scenarios.run_scenario(sc, out_root, Path(__file__).resolve())


def main(argv: Optional[list[str]] = None) -> int:
    parser = scenarios.scenario_parser(__doc__.split("\n")[0], DATA_DIR)
    args = parser.parse_args(argv)
    if args.inside:
        scenarios.run_inside(HELPER_SCENARIOS[args.inside], args.out, None)
        return 0
    return scenarios.run_named(HELPER_SCENARIOS, run, args, parser)


if __name__ == "__main__":
    sys.exit(main())
