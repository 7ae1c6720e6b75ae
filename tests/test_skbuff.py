"""Socket buffers: layout, truesize, copying page by page, SO_ADU, and paged packets on the wire."""

from __future__ import annotations

import errno
import socket

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import IP, UDP

from pystack.skbuff import (
    PAGE_SIZE,
    SKB_MAX_HEAD,
    SKB_SHINFO_SIZE,
    SKB_STRUCT_SIZE,
    alloc_skb,
    data_align,
    skb_copy_data,
)
from pystack.socket import MAX_ADU, SO_ADU, SO_SNDBUF, SOL_SOCKET

from .core_helpers import FAR, Bench
from .kernel_world import KERNEL, PYSTACK, kernel_world

OVERHEAD = SKB_STRUCT_SIZE + SKB_SHINFO_SIZE


def test_a_packet_that_fits_a_head_is_linear() -> None:
    skb = alloc_skb(20, 1008, 9000)
    assert (skb.length, skb.head_len, skb.npages) == (1028, 1028, 0)
    assert len(skb.data) == 1028
    assert skb.truesize == OVERHEAD + 1088  # the head rounded up to a cache line


def test_a_larger_packet_keeps_its_headers_linear_and_its_data_in_pages() -> None:
    skb = alloc_skb(20, 8008, 9000)
    assert (skb.length, skb.head_len, skb.npages) == (8028, 20, 2)
    assert skb.truesize == OVERHEAD + 64 + 2 * PAGE_SIZE


def test_on_a_path_whose_mtu_fits_a_head_every_packet_is_linear() -> None:
    # No packet on such a path is larger than the head, so the test is the path's alone.
    assert alloc_skb(20, SKB_MAX_HEAD - 20, SKB_MAX_HEAD).npages == 0
    assert alloc_skb(20, SKB_MAX_HEAD - 19, SKB_MAX_HEAD + 1).npages == 1


@given(header_len=st.integers(0, 60), data=st.binary(max_size=3 * PAGE_SIZE + 17),
       mtu=st.sampled_from([1500, 9000, 65535]))
def test_copied_data_lands_after_the_headers_whatever_the_layout(header_len: int, data: bytes, mtu: int) -> None:
    skb = alloc_skb(header_len, len(data), mtu)
    skb_copy_data(skb, header_len, data)
    assert bytes(skb.data) == bytes(header_len) + data
    assert skb.npages == (0 if header_len + len(data) <= SKB_MAX_HEAD or mtu <= SKB_MAX_HEAD
                          else -(-len(data) // PAGE_SIZE))
    assert skb.truesize == OVERHEAD + data_align(skb.head_len) + skb.npages * PAGE_SIZE


def test_a_jumbo_datagram_goes_out_whole_and_is_charged_its_pages() -> None:
    bench = Bench(mtu=9000)
    stack = bench.stack
    iface = stack.add_interface("pst1", "198.19.0.2", 24, mtu=9000)  # no sink: packets wait in txq
    fd = bench.udp_socket()
    payload = bytes(i % 253 for i in range(8000))
    stack.sendto(fd, payload, 0, ("198.19.0.9", 7))
    assert stack.sockets[fd].wmem == OVERHEAD + 64 + 2 * PAGE_SIZE
    [packet] = iface.drain()
    assert stack.sockets[fd].wmem == 0
    dissected = IP(packet)
    assert dissected.len == 8028 and dissected.flags == "DF"
    assert bytes(dissected[UDP].payload) == payload
    assert IP(bytes(dissected)).chksum == dissected.chksum  # scapy recomputes: the same
    assert stack.counters.ip["FragOKs"] == 0


def test_fragments_are_allocated_one_by_one() -> None:
    bench = Bench()
    fd = bench.udp_socket()
    bench.stack.sendto(fd, bytes(4000), 0, (FAR, 9))
    fragments = bench.sent()
    assert [len(p) for p in fragments] == [1500, 1500, 1068]  # 4008 bytes: 1480 + 1480 + 1048
    assert bench.counters.ip["FragCreates"] == 3


def test_so_sndbuf_counts_truesize() -> None:
    bench = Bench()
    stack = bench.stack
    iface = stack.add_interface("pst1", "198.19.0.2", 24)  # no sink: packets wait in txq
    fd = bench.udp_socket()
    stack.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, 2500)  # doubled: 5000
    truesize = OVERHEAD + data_align(128)  # 100 bytes of data, 128-byte packets: 704
    for sent in range(1, 9):  # sends succeed while the charge is below 5000: 8 of them
        stack.sendto(fd, bytes(100), 0, ("198.19.0.9", 9))
        assert stack.sockets[fd].wmem == sent * truesize
    with pytest.raises(BlockingIOError):
        stack.sendto(fd, bytes(100), 0, ("198.19.0.9", 9))
    assert len(iface.txq) == 8


# ---------------------------------------------------------------- SO_ADU on UDP


def test_so_adu_commits_a_udp_socket_to_one_datagram_size() -> None:
    bench = Bench()
    stack = bench.stack
    fd = bench.udp_socket()
    stack.setsockopt(fd, SOL_SOCKET, SO_ADU, 512)
    assert stack.getsockopt(fd, SOL_SOCKET, SO_ADU) == 512
    assert stack.sendto(fd, bytes(512), 0, (FAR, 9)) == 512
    for size in (0, 511, 513):
        with pytest.raises(OSError) as info:
            stack.sendto(fd, bytes(size), 0, (FAR, 9))
        assert info.value.errno == errno.EINVAL
    assert len(bench.sent()) == 1
    stack.setsockopt(fd, SOL_SOCKET, SO_ADU, 0)
    assert stack.sendto(fd, b"any", 0, (FAR, 9)) == 3


@pytest.mark.parametrize("value", [-1, MAX_ADU + 1])
def test_so_adu_out_of_range_is_einval(value: int) -> None:
    bench = Bench()
    fd = bench.udp_socket()
    with pytest.raises(OSError) as info:
        bench.stack.setsockopt(fd, SOL_SOCKET, SO_ADU, value)
    assert info.value.errno == errno.EINVAL
    assert bench.stack.getsockopt(fd, SOL_SOCKET, SO_ADU) == 0


# ---------------------------------------------------------------- on the wire


@pytest.mark.tun
async def test_paged_datagrams_reach_the_kernel_over_a_jumbo_tun() -> None:
    async with kernel_world(mtu=9000) as world:
        server = world.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM)
        await server.bind((KERNEL, 6100))
        client = world.network.socket()
        client.setsockopt(SOL_SOCKET, SO_ADU, 8000)
        await client.connect((KERNEL, 6100))
        sent = [bytes((i * n) % 256 for i in range(8000)) for n in (3, 5, 7)]
        for payload in sent:
            await client.send(payload)
        with trio.fail_after(5):
            received = [(await server.recvfrom(65535))[0] for _ in sent]
        assert received == sent
        assert world.stack.counters.ip["FragOKs"] == 0
        assert client.getsockname()[0] == PYSTACK
