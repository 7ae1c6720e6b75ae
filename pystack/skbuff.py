"""Socket buffers: every outgoing IP packet is allocated and charged as Linux's sk_buff.

``ip_output`` asks :func:`alloc_skb` for one packet's buffer, writes the IP
header into it in place and copies the transport data in after it with
:func:`skb_copy_data`; the interface hands the buffer to the link as it
is. While a packet waits in an interface's queue, its socket is charged
the packet's ``truesize``, Linux's measure for SO_SNDBUF: the buffer plus
the sk_buff and shared-info structures, with whole pages for paged data.

The layout is a scatter-gather NIC's: a packet that fits a one-page linear
head (``SKB_MAX_HEAD``) is all linear; a larger one keeps its headers in
the head and its data in page fragments, filled page by page. In Python
the pages are regions of the packet's one bytearray, so the link writes it
without gathering. Every size here follows from the packet's length alone:
with a committed ADU size the specializer computes them once and unrolls
the page loop (thesis 3.1.1, "Optimizing buffer allocation").
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
CACHE_LINE = 64
SKB_STRUCT_SIZE = 256  # SKB_DATA_ALIGN(sizeof(struct sk_buff)) on x86-64
SKB_SHINFO_SIZE = 320  # SKB_DATA_ALIGN(sizeof(struct skb_shared_info))
SKB_MAX_HEAD = PAGE_SIZE - SKB_SHINFO_SIZE  # the most a one-page linear head holds
MAX_TCP_HEADER = 256  # the head room of every TCP skb, L1_CACHE_ALIGN(128 + MAX_HEADER)


@dataclass(frozen=True, slots=True)
class SkBuff:
    """One packet's memory: the bytes, and how they are laid out and charged."""

    data: bytearray  # the whole packet, headers first
    length: int  # len(data), known without asking the buffer
    head_len: int  # bytes in the linear head; the rest is in pages
    npages: int  # page fragments after the head
    truesize: int  # what the packet costs its socket's send buffer (skb->truesize)


def data_align(size: int) -> int:
    """Round up to a cache line, as SKB_DATA_ALIGN does for the head."""
    return (size + CACHE_LINE - 1) & ~(CACHE_LINE - 1)


def alloc_skb(header_len: int, data_len: int, mtu: int) -> SkBuff:
    """A buffer for ``header_len`` bytes of headers and ``data_len`` bytes of data,
    for a packet on a path of MTU ``mtu``.

    Linear when the packet fits a one-page head, which every packet does on
    a path whose MTU does (a test decided by the path alone, and so folded
    with the route); otherwise the headers are linear and the data goes in
    ceil(data_len / PAGE_SIZE) pages (alloc_skb_with_frags). The truesize
    follows the layout.
    """
    size = header_len + data_len
    if mtu <= SKB_MAX_HEAD or size <= SKB_MAX_HEAD:
        head_len = size
        npages = 0
    else:
        head_len = header_len
        npages = (data_len + PAGE_SIZE - 1) >> PAGE_SHIFT
    truesize = SKB_STRUCT_SIZE + SKB_SHINFO_SIZE + data_align(head_len) + npages * PAGE_SIZE
    return SkBuff(bytearray(size), size, head_len, npages, truesize)


# What an empty TCP send skb costs the send buffer (Linux tcp_stream_alloc_skb:
# SKB_TRUESIZE(skb_end_offset)); its head, MAX_TCP_HEADER and the shared info,
# comes from the small-head cache of exactly that size (Linux >= 6.3). The data
# tcp_sendmsg copies in adds its own length, byte for byte. Measured on Linux
# 6.18: a non-blocking write into a zero window queues a second 64240-byte
# skb exactly when SO_SNDBUF exceeds 64240 + 832.
TCP_SKB_TRUESIZE = SKB_STRUCT_SIZE + SKB_SHINFO_SIZE + data_align(MAX_TCP_HEADER)


def tcp_sndmem_per_mss(mss: int) -> int:
    """Send-buffer memory per segment when every segment is an skb of its own with a
    kmalloc'd head (Linux tcp_sndbuf_expand's worst case): the head rounded to a
    power of two, plus the sk_buff."""
    return (1 << (mss + MAX_TCP_HEADER + SKB_SHINFO_SIZE - 1).bit_length()) + SKB_STRUCT_SIZE


def skb_copy_data(skb: SkBuff, offset: int, data: bytes | memoryview) -> None:
    """Copy ``data`` into the packet from ``offset`` on: into the head, then page by page."""
    if not skb.npages:
        skb.data[offset:] = data
        return
    source = memoryview(data)
    in_head = skb.head_len - offset
    if in_head > 0:
        skb.data[offset : skb.head_len] = source[:in_head]
    for page in range(skb.npages):
        start = skb.head_len + page * PAGE_SIZE
        end = min(start + PAGE_SIZE, skb.length)
        skb.data[start:end] = source[start - offset : end - offset]
