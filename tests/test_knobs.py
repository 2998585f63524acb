"""The knob registry and the kernel's sysctl write parsing (spec §3.3, §3.4)."""
import errno

import pytest

from engine.knobs import (KNOBS, KNOBS_BY_PATH, KnobValues, KnobWriteError,
                          default_table_size)

GiB = 1 << 30


@pytest.fixture
def linux():
    return KnobValues("linux", 24 * GiB)


# (input, bytes the write returns, value after) -- spec §3.4, observed on
# nf_conntrack_generic_timeout (jiffies, HZ=250) inside a namespace.
ACCEPTED = [
    (b"42", 2, 42), (b"42\n", 3, 42), (b" 42", 3, 42), (b"42 ", 3, 42), (b"\t42\n", 4, 42),
    (b"0x10", 4, 16), (b"010", 3, 8), (b"-5", 2, -5), (b"-0", 2, 0),
    (b"42 abc", 3, 42), (b"42 43", 3, 42), (b"42\n43", 3, 42),
    (b"8589934", 7, 8589934), (b"-8589934", 8, -8589934),
]
REFUSED = [b"+5", b"- 5", b"abc", b"1.5", b"42abc", b"\n", b"8589935", b"-8589935",
           b"99999999999999999999999", b"2147483648"]


@pytest.mark.parametrize("data,consumed,value", ACCEPTED)
def test_jiffies_knob_accepts_what_the_kernel_accepts(linux, data, consumed, value):
    assert linux.write_text("generic_timeout", data) == consumed
    assert linux.read_text("generic_timeout") == f"{value}\n"


@pytest.mark.parametrize("data", REFUSED)
def test_jiffies_knob_refuses_with_einval_and_keeps_the_value(linux, data):
    with pytest.raises(KnobWriteError) as exc:
        linux.write_text("generic_timeout", data)
    assert exc.value.errno == errno.EINVAL
    assert linux["generic_timeout"] == 600


@pytest.mark.parametrize("knob,data", [("tcp_loose", b"2"), ("log_invalid", b"256"),
                                       ("events", b"3"), ("tcp_loose", b"-1"),
                                       ("tcp_be_liberal", b"-0")])
def test_u8_knobs_refuse_out_of_range(linux, knob, data):
    old = linux[knob]
    with pytest.raises(KnobWriteError) as exc:
        linux.write_text(knob, data)
    assert exc.value.errno == errno.EINVAL and linux[knob] == old


def test_u8_knob_accepts_its_range(linux):
    assert linux.write_text("log_invalid", b"255\n") == 4 and linux["log_invalid"] == 255
    assert linux.write_text("events", b"0") == 1 and linux["events"] == 0


def test_empty_write_changes_nothing_and_returns_zero(linux):
    assert linux.write_text("udp_timeout", b"") == 0 and linux["udp_timeout"] == 30


def test_write_at_nonzero_offset_is_ignored_but_reported_written(linux):
    """spec §3.4: `77` written at offset 5 -> returned 2, no change."""
    assert linux.write_text("udp_timeout", b"77", offset=5) == 2
    assert linux["udp_timeout"] == 30


def test_read_only_knobs_refuse_writes_with_eacces(linux):
    for name in ("count", "buckets"):
        with pytest.raises(KnobWriteError) as exc:
            linux.write_text(name, b"1")
        assert exc.value.errno == errno.EACCES


def test_max_refuses_negative_in_linux_profile(linux):
    with pytest.raises(KnobWriteError):
        linux.write_text("max", b"-1")
    assert linux.write_text("max", b"0") == 1 and linux["max"] == 0


def test_every_alias_path_reads_one_value(linux):
    knob = KNOBS_BY_PATH["sys/net/ipv4/netfilter/ip_ct_tcp_timeout_established"]
    assert knob is KNOBS_BY_PATH["sys/net/netfilter/nf_conntrack_tcp_timeout_established"]
    assert knob is KNOBS_BY_PATH["sys/net/ipv4/netfilter/ip_conntrack_tcp_timeout_established"]
    max_knob = KNOBS_BY_PATH["sys/net/ipv4/ip_conntrack_max"]
    assert max_knob is KNOBS_BY_PATH["sys/net/nf_conntrack_max"]
    assert max_knob is KNOBS_BY_PATH["sys/net/netfilter/nf_conntrack_max"]


def test_design_tree_names_exist():
    """DESIGN.md: the tutorial's ip_ct_* names, 2.6 ip_conntrack_* names, modern names."""
    for path in ("sys/net/ipv4/netfilter/ip_ct_udp_timeout_stream",
                 "sys/net/ipv4/netfilter/ip_ct_icmp_timeout",
                 "sys/net/ipv4/netfilter/ip_ct_generic_timeout",
                 "sys/net/ipv4/netfilter/ip_ct_tcp_be_liberal",
                 "sys/net/ipv4/netfilter/ip_ct_tcp_loose",
                 "sys/net/ipv4/netfilter/ip_ct_tcp_max_retrans",
                 "sys/net/ipv4/netfilter/ip_conntrack_count",
                 "sys/net/ipv4/netfilter/ip_conntrack_buckets",
                 "sys/net/ipv4/netfilter/ip_conntrack_checksum",
                 "sys/net/ipv4/netfilter/ip_conntrack_log_invalid",
                 "sys/net/netfilter/nf_conntrack_tcp_timeout_unacknowledged",
                 "sys/net/netfilter/nf_conntrack_tcp_ignore_invalid_rst"):
        assert path in KNOBS_BY_PATH, path
    assert len({k.name for k in KNOBS}) == len(KNOBS)


def test_linux_defaults_match_this_machine_kernel():
    """spec §3.3 / §7.1: 24 GiB -> 262144 buckets, max 262144, expect_max 4096."""
    k = KnobValues("linux", 24 * GiB)
    assert (k["buckets"], k["max"], k["expect_max"]) == (262144, 262144, 4096)
    assert (k["tcp_timeout_established"], k["udp_timeout_stream"], k["tcp_loose"]) == (432000, 120, 1)


def test_table_size_from_ram():
    """spec §7.1, and the tutorial: "On 128 MB of RAM you will get 8192 possible entries"."""
    assert default_table_size("tutorial", 128 << 20) == (1024, 8192)
    assert default_table_size("tutorial", 2 * GiB) == (8192, 65536)
    assert default_table_size("linux", 512 << 20) == (4096, 4096)
    assert default_table_size("linux", 2 * GiB) == (65536, 65536)
    assert default_table_size("linux", 64 << 20) == (1024, 1024)


def test_tutorial_defaults():
    k = KnobValues("tutorial", 24 * GiB)
    assert (k["tcp_loose"], k["udp_timeout_stream"], k["tcp_timeout_close_wait"]) == (3, 180, 43200)
    assert (k["buckets"], k["max"]) == (8192, 65536)


def test_buckets_override_sets_max_to_eight_times():
    assert KnobValues("linux", 24 * GiB, buckets=1024)["max"] == 8192


# -- the handlers' answers to write(2) and read(2) at a file position, as observed on this
# machine's kernel (tests/test_fileops_kernel.py compares the mount with it case by case).

def test_u8_write_returns_the_whole_write_and_keeps_position_zero(linux):
    """proc_dou8vec_minmax: `1\\n2\\n` returns 4 and stores 1; the position stays at 0, so a
    second write on the descriptor is parsed again (`printf '1\\n'; printf '0\\n'` -> 0)."""
    assert linux.write_at("events", b"1\n2\n", 0) == (4, 0) and linux["events"] == 1
    assert linux.write_at("events", b"1 abc", 0) == (5, 0)


def test_int_write_returns_the_first_number_and_advances_as_far(linux):
    assert linux.write_at("generic_timeout", b"1\n2\n", 0) == (2, 2)
    assert linux.write_at("generic_timeout", b"7", 2) == (1, 1)        # ignored at 2
    assert linux["generic_timeout"] == 1


@pytest.mark.parametrize("data,answer,value", [
    (b" " * 4094 + b"7", 4095, 7),            # the number is the 4095th byte: parsed
    (b"7" + b" " * 5000, 5001, 7),            # blanks past the window count as consumed
    (b" " * 4093 + b"123", 4096, 12),         # the window cuts the number
])
def test_only_the_first_4095_bytes_of_a_write_are_parsed(linux, data, answer, value):
    assert linux.write_text("generic_timeout", data) == answer
    assert linux["generic_timeout"] == value


@pytest.mark.parametrize("data", [b" " * 4095 + b"7", b"000000000000000000001",
                                  b"-00000000000000000001"])
def test_past_the_window_and_21_character_numbers_are_einval(linux, data):
    with pytest.raises(KnobWriteError):
        linux.write_text("generic_timeout", data)
    assert linux["generic_timeout"] == 600


def test_twenty_characters_are_still_a_number(linux):
    assert linux.write_text("generic_timeout", b"-0000000000000000001") == 20
    assert linux["generic_timeout"] == -1


@pytest.mark.parametrize("name,data,ok", [
    ("ipfrag_high_thresh", b"0", False), ("ipfrag_high_thresh", b"0x10", False),
    ("ipfrag_high_thresh", b"3145727", False), ("ipfrag_high_thresh", b"3145728", True),
    ("ipfrag_high_thresh", b"2147483648", True), ("ipfrag_high_thresh", b"18446744073709551615", True),
    ("ipfrag_high_thresh", b"18446744073709551616", False), ("ipfrag_high_thresh", b"-0", False),
    ("ipfrag_low_thresh", b"0", True), ("ipfrag_low_thresh", b"4194304", True),
    ("ipfrag_low_thresh", b"4194305", False), ("frag6_low_thresh", b"4194305", False),
    ("frag6_high_thresh", b"3145727", False),
])
def test_thresholds_are_unsigned_longs_bounded_by_each_other(linux, name, data, ok):
    """proc_doulongvec_minmax with high's minimum at low's value and low's maximum at high's."""
    if ok:
        linux.write_text(name, data)
        assert linux[name] == int(data)
    else:
        old = linux[name]
        with pytest.raises(KnobWriteError):
            linux.write_text(name, data)
        assert linux[name] == old


def test_the_relation_follows_the_other_knob(linux):
    linux.write_text("ipfrag_high_thresh", b"5000000")
    linux.write_text("ipfrag_low_thresh", b"5000000")
    with pytest.raises(KnobWriteError):
        linux.write_text("ipfrag_high_thresh", b"4999999")


def test_a_read_gives_the_value_at_position_zero_only(linux):
    assert linux.read_at("generic_timeout", 1, 0) == b"6"          # dd bs=1: one byte
    assert linux.read_at("generic_timeout", 100, 1) == b""
    assert linux.read_at("ipfrag_max_dist", 100, 0) == b"64\n"
