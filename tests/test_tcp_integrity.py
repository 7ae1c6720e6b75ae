"""Byte-exact transfers over bad links (seeded loss, reordering, duplication, corruption),
bounded in virtual time and in events, and property tests of write patterns."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.links.impair import Impairments
from pystack.socket import IPPROTO_TCP, SO_RCVBUF, SOL_SOCKET
from pystack.tcp.api import TCP_NODELAY
from pystack.tcp.tcb import TcpConfig

from .tcp_harness import Pair

BAD_LINK = Impairments(loss=0.05, duplicate=0.02, reorder=0.05, corrupt=0.01, delay=0.01, jitter=0.002,
                       reorder_hold=0.005)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_megabyte_each_way_over_a_bad_link(seed: int):
    pair = Pair(impair_ab=BAD_LINK, impair_ba=BAD_LINK, seed=seed, max_steps=20_000)
    cfd, sfd, _ = pair.connect()
    rng = random.Random(seed)
    up = rng.randbytes(1 << 20)
    down = rng.randbytes(1 << 20)
    got_b, got_a, took = pair.exchange(cfd, sfd, up, down, timeout=120, close_after=True)
    assert sha(got_b) == sha(up) and sha(got_a) == sha(down)
    # 20 ms RTT, 5% loss each way (about 9 s here): fast recovery carries most losses.
    assert took < 20, took
    assert pair.steps < 20_000  # events: deliveries and timer runs
    for stack in (pair.a, pair.b):
        assert stack.counters.tcp["RetransSegs"] > 0
        assert stack.counters.tcp["InCsumErrors"] > 0  # corrupted segments were caught and dropped
    stats = pair.models["a>b"].stats
    assert stats.lost and stats.duplicated and stats.reordered and stats.corrupted


def test_transfer_without_sack_or_timestamps_over_a_bad_link():
    plain = TcpConfig(sack=False, timestamps=False)
    pair = Pair(config_a=plain, config_b=plain, impair_ab=BAD_LINK, impair_ba=BAD_LINK, seed=11,
                max_steps=20_000)
    cfd, sfd, _ = pair.connect()
    assert not pair.tcb("a", cfd).sack_ok and not pair.tcb("a", cfd).ts_ok
    rng = random.Random(11)
    up = rng.randbytes(1 << 20)
    down = rng.randbytes(256 << 10)
    got_b, got_a, took = pair.exchange(cfd, sfd, up, down, timeout=200, close_after=True)
    assert sha(got_b) == sha(up) and sha(got_a) == sha(down)
    assert took < 30, took


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    up=st.integers(min_value=0, max_value=60_000),
    down=st.integers(min_value=0, max_value=20_000),
    writes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=8),
    reads=st.integers(min_value=1, max_value=70_000),
    nodelay=st.booleans(),
    lossy=st.booleans(),
    rcvbuf=st.sampled_from([0, 2304, 5000, 20000]),
    sack=st.booleans(),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_same_bytes_out_as_in(up, down, writes, reads, nodelay, lossy, rcvbuf, sack, seed):
    impair = Impairments(loss=0.03, reorder=0.05, duplicate=0.02, corrupt=0.01, delay=0.002) if lossy else None
    config = TcpConfig(sack=sack)
    pair = Pair(impair_ab=impair, impair_ba=impair, seed=seed, delay=0.001, max_steps=100_000,
                config_a=config, config_b=config)

    def small_buffer(fd: int) -> None:
        if rcvbuf:
            pair.b.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, rcvbuf)

    cfd, sfd, _ = pair.connect(setup_listener=small_buffer)  # SYN loss: connect() allows for retries
    if rcvbuf:
        pair.a.setsockopt(cfd, SOL_SOCKET, SO_RCVBUF, rcvbuf)
    if nodelay:
        pair.a.setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, 1)
    rng = random.Random(seed)
    a_data, b_data = rng.randbytes(up), rng.randbytes(down)
    got_b, got_a, _ = pair.exchange(cfd, sfd, a_data, b_data, timeout=120, write_sizes=writes,
                                    read_size=reads, close_after=True)
    assert got_b == a_data and got_a == b_data
