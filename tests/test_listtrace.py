"""bench/trace/listtrace.py's summary of one cat: which requests fell inside it and where
their time went, from the shim's and the traced mount's records (nanoseconds)."""
from __future__ import annotations

from bench.trace.listtrace import summary

MS = 1_000_000


def request(op: str, read: int, enter: int, leave: int, reply: int) -> dict:
    return {"op": op, "read": read * MS, "enter": enter * MS, "leave": leave * MS,
            "reply": reply * MS, "tid": 1}


def test_a_cat_is_summed_from_its_own_requests_only():
    fuse = {
        1: request("OPEN", 100, 101, 102, 102),
        2: request("READ", 103, 105, 115, 116),     # gil 2, python 10, reply 1
        3: request("READ", 120, 121, 131, 133),     # 4 ms after the last reply; reply 2
        4: request("READ", 500, 501, 502, 503),     # another cat's
    }
    gcs = [(110 * MS, 112 * MS, 0), (600 * MS, 601 * MS, 2)]
    line = summary("ip_conntrack", 100 * MS, 140 * MS, fuse, gcs)
    assert line == ("ip_conntrack: wall 40 ms, requests {'OPEN': 1, 'READ': 2}, python 21 ms, "
                    "gil 4 ms, reply 3 ms, between reads 4 ms, collections 1 (2.0 ms)")


def test_a_request_the_bindings_answered_alone_counts_but_has_no_parts():
    fuse = {1: {"op": "GETXATTR", "read": 5 * MS, "reply": 6 * MS, "tid": 1}}
    assert summary("nf_conntrack", 0, 10 * MS, fuse, []) == (
        "nf_conntrack: wall 10 ms, requests {'GETXATTR': 1}, python 0 ms, gil 0 ms, "
        "reply 0 ms, between reads 0 ms, collections 0 (0.0 ms)")
