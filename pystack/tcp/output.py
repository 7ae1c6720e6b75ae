"""What TCP sends and how: segments, ACKs, window advertisement, data transmission.

``tcp_output`` is called after every event (data queued, ACK arrived,
timer fired) and sends what the windows, Nagle, cork and congestion
control allow. Segment building is one function, ``transmit``, so every
segment carries the current ACK, window and options the same way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .. import ip
from ..route import cached_route
from ..skbuff import MAX_TCP_HEADER, tcp_sndmem_per_mss
from ..socket import IP_PMTUDISC_WANT
from ..wire.ipv4 import PROTO_TCP
from ..wire.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, TcpOptions, build_options, build_tcp
from ..wire.tcp import HEADER_LEN as TCP_HEADER_LEN
from .rtt import RTO_INITIAL
from .seq import MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from .tcb import (
    CA_CWR,
    CA_OPEN,
    CAN_SEND,
    CLOSED,
    DEFAULT_MSS,
    LISTEN,
    SYN_RECEIVED,
    SYN_SENT,
    TCB,
    Sent,
)

if TYPE_CHECKING:
    from ..stack import Stack

MAX_SACK_BLOCKS_WITH_TS = 3
MAX_SACK_BLOCKS = 4
TIMESTAMP_OPTION_LEN = 12
SACK_OPTION_BASE = 4  # two NOPs, kind and length (TCPOLEN_SACK_BASE_ALIGNED)
SACK_BLOCK_LEN = 8
GSO_MAX_SIZE = 65536 - 1 - MAX_TCP_HEADER  # Linux: sk_gso_max_size less MAX_TCP_HEADER
TLP_MIN_TIMEOUT = 0.002  # Linux's TCP_TIMEOUT_MIN (2 jiffies): a loss probe's slack
ECN_MASK = 0x03  # the ECN field of the IP TOS byte
ECT_0 = 0x02
CE = 0x03


def ts_now(stack: Stack, tcb: TCB) -> int:
    """The timestamp clock: milliseconds, offset per connection (as Linux)."""
    return (int(stack.clock.now() * 1000) + tcb.ts_offset) & MASK


def receive_space(tcb: TCB) -> int:
    """Bytes the receive buffer may hold for the window (half the buffer, as Linux)."""
    return tcb.sock.rcvbuf // 2


def free_window(tcb: TCB, space: int | None = None) -> int:
    """Receive space not taken by queued data (``space``: receive_space(tcb), if known)."""
    queued = len(tcb.recv_buffer) + tcb.out_of_order.bytes
    return max((receive_space(tcb) if space is None else space) - queued, 0)


def window_to_advertise(tcb: TCB) -> int:
    """The receive window, with receiver-side silly-window avoidance (RFC 1122 4.2.3.3).

    The right edge never moves left; it moves right only by at least
    min(MSS, half the buffer), so the peer is not invited to send tiny segments.
    """
    current = max(seq_diff(tcb.rcv_edge, tcb.rcv_nxt), 0)
    space = receive_space(tcb)
    free = free_window(tcb, space)
    if free >= current + min(tcb.advmss, space // 2):
        current = free
    limit = 0xFFFF << tcb.rcv_wscale
    return min(current, limit)


def transmit(stack: Stack, tcb: TCB, seq: int, payload: bytes, flags: int, new_data: bool = False) -> None:
    """Build one segment with the current ACK, window and options, and send it (``new_data``:
    first sent now, not a retransmission: the only data ECN marks ECN-capable)."""
    if flags & SYN and flags & ACK and tcb.parent is None:
        # Simultaneous open: our SYN again, with everything it offered (Linux tcp_send_synack).
        cfg = stack.tcp.config
        options = TcpOptions(
            mss=tcb.advmss,
            wscale=cfg.window_scale,
            sack_permitted=cfg.sack,
            ts_val=ts_now(stack, tcb) if cfg.timestamps else None,
            ts_ecr=tcb.ts_recent if cfg.timestamps else 0,
        )
        window = min(window_to_advertise(tcb), 0xFFFF)
        raw_window = window
    elif flags & SYN:
        options = TcpOptions(
            mss=tcb.advmss,
            wscale=tcb.rcv_wscale if tcb.want_wscale else None,
            sack_permitted=tcb.want_sack,
            ts_val=ts_now(stack, tcb) if tcb.want_ts else None,
            ts_ecr=tcb.ts_recent if tcb.want_ts and flags & ACK else 0,
        )
        window = min(window_to_advertise(tcb), 0xFFFF)
        raw_window = window
    else:
        blocks = sack_blocks(tcb) if tcb.sack_ok and tcb.out_of_order else []
        if tcb.dsack is not None:
            blocks.insert(0, tcb.dsack)  # RFC 2883: a duplicate, reported first and once
            tcb.dsack = None
        limit = MAX_SACK_BLOCKS_WITH_TS if tcb.ts_ok else MAX_SACK_BLOCKS
        options = TcpOptions(
            ts_val=ts_now(stack, tcb) if tcb.ts_ok else None,
            ts_ecr=tcb.ts_recent if tcb.ts_ok else 0,
            sack_blocks=blocks[:limit],
        )
        # Rounded up to the scale unit, so that scaling does not pull the edge left (Linux
        # aligns the same way); the rounding is not committed, so it cannot creep.
        window = window_to_advertise(tcb)
        raw_window = min((window + (1 << tcb.rcv_wscale) - 1) >> tcb.rcv_wscale, 0xFFFF)
    tos = tcb.sock.tos
    if flags & SYN:
        if flags & ACK:
            flags |= ECE if tcb.ecn_ok else 0  # ECN agreed (RFC 3168 6.1.1)
        elif tcb.want_ecn:
            flags |= ECE | CWR  # ECN asked for
    elif tcb.ecn_ok:
        if payload and new_data:  # new data is ECN-capable; ACKs, retransmissions not
            tos = (tos & ~ECN_MASK) | ECT_0
            if tcb.ecn_queue_cwr:
                tcb.ecn_queue_cwr = False
                flags |= CWR
        if tcb.ecn_demand_cwr:
            flags |= ECE  # a CE mark seen: echoed until the peer's CWR
    ack = tcb.rcv_nxt if flags & ACK else 0
    segment = build_tcp(
        tcb.local_port, tcb.remote_port, seq, ack, flags, raw_window,
        build_options(options, bool(flags & SYN)), payload, tcb.local_addr, tcb.remote_addr,
    )
    if flags & ACK:
        tcb.rcv_wup = tcb.rcv_nxt
        tcb.rcv_edge = seq_add(tcb.rcv_nxt, window)
        told = seq_add(tcb.rcv_nxt, raw_window << (0 if flags & SYN else tcb.rcv_wscale))
        if seq_gt(told, tcb.rcv_adv):
            tcb.rcv_adv = told  # data up to any edge we announced stays acceptable
        tcb.ack_pending = 0
        tcb.ack_now = False
        tcb.delack_at = math.inf
        if tcb.quickacks:
            tcb.quickacks -= 1
    # Last: over loopback the answer may be processed before this call returns (see send_data_segment).
    send_segment(stack, tcb, segment, tos)


def send_segment(stack: Stack, tcb: TCB, segment: bytes, tos: int) -> None:
    sock = tcb.sock
    route = cached_route(stack, sock)
    stack.counters.tcp["OutSegs"] += 1
    if route is None:
        stack.counters.ip["OutNoRoutes"] += 1
        return
    ttl = sock.ttl if sock.ttl >= 0 else stack.default_ttl
    try:
        ip.ip_output(stack, sock, route, tcb.local_addr, tcb.remote_addr, PROTO_TCP, segment,
                     ttl, tos, IP_PMTUDISC_WANT)
    except OSError:
        stack.counters.tcp["OutErrors"] += 1  # oversize after a PMTU drop: retransmission resegments


def sack_blocks(tcb: TCB) -> list[tuple[int, int]]:
    """Out-of-order ranges as SACK blocks, most recently changed first (RFC 2018; Linux's order),
    then the lowest; at most as many as an option can carry."""
    queue = tcb.out_of_order
    ordered: list[tuple[int, int]] = []
    for point in tcb.sack_recent:
        block = queue.block_at(point)
        if block is not None and block not in ordered:
            ordered.append(block)
    return ordered + queue.first_blocks(MAX_SACK_BLOCKS - len(ordered), ordered)


def send_ack(stack: Stack, tcb: TCB) -> None:
    transmit(stack, tcb, tcb.snd_nxt, b"", ACK)


def send_syn(stack: Stack, tcb: TCB) -> None:
    flags = SYN | ACK if tcb.state == SYN_RECEIVED else SYN
    transmit(stack, tcb, tcb.iss, b"", flags)


def send_reset_for(stack: Stack, tcb: TCB) -> None:
    """An abortive close: RST from our current sequence number."""
    transmit(stack, tcb, tcb.snd_nxt, b"", RST | ACK)
    stack.counters.tcp["OutRsts"] += 1


def send_probe(stack: Stack, tcb: TCB) -> None:
    """Zero-window and keepalive probe: an ACK with an old sequence number (as Linux)."""
    transmit(stack, tcb, seq_add(tcb.snd_una, -1), b"", ACK)


def unsent_bytes(tcb: TCB) -> int:
    return len(tcb.send_buffer) - seq_diff(tcb.snd_nxt, tcb.snd_buf_seq)


def stream_memory_free(stack: Stack, tcb: TCB, wake: int) -> bool:
    """Whether a write may start a new skb (Linux __sk_stream_memory_free): the queue's memory
    (truesize, not bytes) below SO_SNDBUF, and the unsent bytes, doubled when ``wake`` (deciding
    whether to wake a writer), below TCP_NOTSENT_LOWAT (tcp_stream_memory_free)."""
    lowat = tcb.notsent_lowat or stack.tcp.config.notsent_lowat
    return tcb.wmem_queued() < tcb.sock.sndbuf and unsent_bytes(tcb) << wake < lowat


def tcp_writeable(stack: Stack, tcb: TCB) -> bool:
    """Whether a writer is told there is room (Linux __sk_stream_is_writeable with wake=1).

    Not as soon as one byte fits: the free memory must be at least half of
    what is queued (sk_stream_min_wspace, so a blocked writer wakes once the
    queue falls to 2/3 of the buffer), and the unsent bytes, doubled, must be
    below TCP_NOTSENT_LOWAT.
    """
    queued = tcb.wmem_queued()
    return tcb.sock.sndbuf - queued >= queued >> 1 and stream_memory_free(stack, tcb, 1)


def check_space(stack: Stack, tcb: TCB) -> None:
    """After input, for a writer that found no room (Linux tcp_check_space): let the buffer grow
    if cwnd has room to use it (tcp_should_expand_sndbuf), then wake the writer if it may write."""
    if not tcb.sock.sndbuf_locked and tcb.in_flight() < tcb.cwnd:
        sndbuf_expand(stack, tcb)
    write_space(stack, tcb)


def write_space(stack: Stack, tcb: TCB) -> None:
    """Wake a writer waiting for room if it may write now (Linux sk_stream_write_space)."""
    if tcp_writeable(stack, tcb):
        tcb.nospace = False
        stack.wake(tcb.sock)


def sndbuf_expand(stack: Stack, tcb: TCB) -> None:
    """Size the send buffer for twice the congestion window (CUBIC's and Reno's factor), each
    segment an skb of its own (Linux tcp_sndbuf_expand); it never shrinks, nor passes tcp_wmem[2]."""
    mss = max(min(tcb.peer_mss, tcb.user_mss or tcb.peer_mss), tcb.mss)  # mss_clamp, mss_cache
    segments = max(stack.tcp.config.initial_cwnd, tcb.cwnd, tcb.reordering + 1)
    sndmem = 2 * segments * tcp_sndmem_per_mss(mss)
    if tcb.sock.sndbuf < sndmem:
        tcb.sock.sndbuf = min(sndmem, stack.tcp.config.wmem_max)


def size_goal(tcb: TCB, mss: int) -> int:
    """How many bytes tcp_sendmsg puts in one skb (Linux tcp_xmit_size_goal): the whole segments
    of the largest GSO packet, at most half the peer's largest window."""
    return max(bound_to_half_window(tcb, GSO_MAX_SIZE) // mss * mss, mss)


def bound_to_half_window(tcb: TCB, size: int) -> int:
    """``size``, at most half the peer's largest window (Linux tcp_bound_to_half_wnd): a peer
    offering a window below two segments still gets several in flight."""
    cutoff = tcb.max_snd_wnd >> 1 if tcb.max_snd_wnd > DEFAULT_MSS else tcb.max_snd_wnd
    if cutoff and size > cutoff:
        return max(cutoff, 68 - TCP_HEADER_LEN - (TIMESTAMP_OPTION_LEN if tcb.ts_ok else 0))
    return size


def skb_sent(tcb: TCB, cut: bool) -> bool:
    """Follow the skbs as data leaves (Linux tcp_write_xmit sends an skb at a time, at most a GSO
    packet of it, and splits it where it stops: ``cut``, tso_fragment). True when the send head
    has moved on to another skb."""
    ends, index = tcb.skb_ends, tcb.skbs_sent
    if index == len(ends):
        return False
    if seq_ge(tcb.snd_nxt, ends[index]):
        while index < len(ends) and seq_ge(tcb.snd_nxt, ends[index]):
            index += 1
        tcb.skbs_sent = index
        return True
    if cut and seq_gt(tcb.snd_nxt, ends[index - 1] if index else tcb.snd_buf_seq):
        ends.insert(index, tcb.snd_nxt)
        tcb.skbs_sent = index + 1
        return True
    return False


def data_at(tcb: TCB, seq: int, length: int) -> bytes:
    offset = seq_diff(seq, tcb.snd_buf_seq)
    return bytes(tcb.send_buffer[offset : offset + length])


def tcp_output(stack: Stack, tcb: TCB) -> None:
    """Send what may be sent now: lost segments first, then new data, then a due ACK."""
    if tcb.state in (CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED):
        if tcb.ack_now and tcb.state == SYN_RECEIVED:
            tcb.ack_now = False
        return
    output_synchronized(stack, tcb)


def output_synchronized(stack: Stack, tcb: TCB, one_packet: bool = False, packet: int = 0) -> None:
    """``tcp_output`` once the connection is synchronized (its state is none of
    CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED): the caller has checked the state.
    ``one_packet``: new data goes out as one GSO packet at most (Linux tcp_push_one);
    ``packet``: segments already in the current GSO packet (a write sending as it queues)."""
    now = stack.clock.now()
    sent_any = tcb.lost_out > 0 and retransmit_lost(stack, tcb, now)  # Linux: only with lost_out
    sent_new, in_flight = send_new_data(stack, tcb, now, tcb.in_flight(), one_packet, packet)
    sent_any = sent_new or sent_any
    cwnd_limited = in_flight >= tcb.cwnd
    if sent_new or cwnd_limited:
        cwnd_validate(tcb, cwnd_limited)
    if sent_new:
        schedule_loss_probe(stack, tcb, now, False)
    if tcb.ack_now and not sent_any:
        send_ack(stack, tcb)


def cwnd_validate(tcb: TCB, cwnd_limited: bool) -> None:
    """Remember whether cwnd was the limit in this window (cwnd grows only then: RFC 7661's
    spirit, Linux tcp_cwnd_validate); when it was not, the most segments out in the window."""
    if cwnd_limited or not seq_lt(tcb.snd_una, tcb.cwnd_usage_seq) or (
            not tcb.is_cwnd_limited and len(tcb.rtx) > tcb.max_packets_out):
        tcb.is_cwnd_limited = cwnd_limited
        tcb.max_packets_out = len(tcb.rtx)
        tcb.cwnd_usage_seq = tcb.snd_nxt


def retransmit_lost(stack: Stack, tcb: TCB, now: float) -> bool:
    """Retransmit the segments marked lost, as the congestion window allows."""
    sent = False
    index = 0
    while index < len(tcb.rtx):  # by index: retransmit() may split a segment (smaller MSS)
        item = tcb.rtx[index]
        index += 1
        if not item.lost or item.in_retransmit or item.sacked:
            continue
        if tcb.in_flight() >= tcb.cwnd:
            break
        retransmit(stack, tcb, item, now)
        sent = True
    return sent


def retransmit(stack: Stack, tcb: TCB, item: Sent, now: float, probe: bool = False) -> None:
    """Send a queued segment again (at most one MSS of it: the MSS may have shrunk).

    ``probe``: a tail loss probe, which the scoreboard does not count as a retransmission in
    flight (Linux __tcp_retransmit_skb), though Karn's rule ignores its RTT all the same."""
    length = item.length - (1 if item.flags & SYN else 0) - (1 if item.flags & FIN else 0)
    mss = send_mss(tcb)
    if length > mss and not item.flags & SYN:
        split(tcb, item, mss)
        length = mss
    flags = ACK | (item.flags & (SYN | FIN | PSH))
    seq, payload = item.seq, data_at(tcb, item.seq, length)
    item.retransmits += 1  # accounted before it leaves, as in send_data_segment
    if not probe:
        tcb.mark_retransmitted(item)
    item.sent_at = now
    if tcb.ca_state != CA_OPEN:
        tcb.prr_out += 1
    stack.counters.tcp["RetransSegs"] += 1
    arm_rto(stack, tcb, now, restart=False)
    if item.flags & SYN:
        send_syn(stack, tcb)
    else:
        transmit(stack, tcb, seq, payload, flags)


def split(tcb: TCB, item: Sent, length: int) -> None:
    """Cut a queued segment after ``length`` bytes (after a path MTU decrease)."""
    index = tcb.rtx.index(item)
    rest = Sent(seq_add(item.seq, length), item.end, item.flags & (FIN | PSH), item.sent_at,
                item.retransmits, item.sacked, item.lost, False)
    item.end = seq_add(item.seq, length)
    item.flags &= ~(FIN | PSH)
    tcb.queue_segment(rest, index + 1)


def send_new_data(stack: Stack, tcb: TCB, now: float, in_flight: int,
                  one_packet: bool = False, packet: int = 0) -> tuple[bool, int]:
    """Send new segments as the windows, Nagle and cork allow; returns (sent any, in flight).

    ``in_flight`` is counted once by the caller and kept up to date here (each new
    segment adds one): counting it per segment walks the whole retransmission queue.
    """
    sent = False
    mss = send_mss(tcb)
    gso = gso_segments(tcb, mss, stack.tcp.config.min_tso_segs)
    chunk = 0  # segments so far from the current skb since it was last split (a Linux TSO packet)
    while True:
        unsent = unsent_bytes(tcb)
        fin_due = tcb.fin_queued and not tcb.fin_sent and unsent <= mss
        if unsent <= 0 and not fin_due:
            break
        if unsent > 0 and in_flight >= tcb.cwnd:
            break
        size = min(mss, unsent)
        record_end = False  # the segment ends a record (MSG_EOR): no data of later writes joins it
        if tcb.eor_ends:
            size, record_end = record_limit(tcb, size)
        window_left = seq_diff(seq_add(tcb.snd_una, tcb.snd_wnd), tcb.snd_nxt)
        if size > window_left:
            if window_left <= 0 or (window_left < tcb.max_snd_wnd // 2 and window_left < mss):
                if not tcb.rtx:
                    arm_persist(stack, tcb, now)
                break
            size, record_end = window_left, False
        last = size == unsent
        if size < mss and last and not fin_due and not tcb.nagle_push:
            corked = tcb.cork or tcb.more
            if corked or (not tcb.nodelay and small_segment_unacked(tcb)):
                # Nagle with Minshall's rule (as Linux), TCP_CORK or MSG_MORE: wait for more data
                # or the ACK. Corked data with nothing in flight goes out when the persist timer
                # fires (Linux's probe timer: the 200 ms ceiling of TCP_CORK).
                if corked and not tcb.rtx:
                    arm_persist(stack, tcb, now)
                break
        packet += 1
        packet_end = packet == gso or in_flight + 1 >= tcb.cwnd or size >= window_left
        flags = segment_flags(tcb, size, last and fin_due, last, record_end, packet > 1 and packet_end)
        send_data_segment(stack, tcb, size, flags, now, mss)
        chunk += 1
        if tso_packet_sent(stack, tcb, chunk == gso):
            chunk = 0
        if record_end:
            tcb.eor_ends.popleft()
        if packet_end:
            packet = 0
        sent = True
        in_flight += 1
        if flags & FIN or (one_packet and packet_end):
            break
    tso_packet_sent(stack, tcb, chunk > 0)  # the last one ends where sending stopped
    tcb.gso_packet = packet
    return sent, in_flight


def tso_packet_sent(stack: Stack, tcb: TCB, cut: bool) -> bool:
    """After a segment: whether it ended one of Linux's TSO packets (skb_sent); if so, a waiting
    writer's room is checked then, as Linux's tcp_event_new_data_sent does."""
    if not skb_sent(tcb, cut):
        return False
    if tcb.nospace:
        check_space(stack, tcb)
    return True


def record_limit(tcb: TCB, size: int) -> tuple[int, bool]:
    """``size`` cut where the next record (MSG_EOR write) ends, and whether it ends there."""
    while tcb.eor_ends and seq_le(tcb.eor_ends[0], tcb.snd_nxt):
        tcb.eor_ends.popleft()  # passed already (by a window probe)
    to_end = seq_diff(tcb.eor_ends[0], tcb.snd_nxt) if tcb.eor_ends else size + 1
    return (to_end, True) if to_end <= size else (size, False)


def segment_flags(tcb: TCB, size: int, fin: bool, last: bool, record_end: bool, gso_end: bool) -> int:
    """The flags of a new segment. PSH as Linux sets it: where the queued data ends (unless the
    write said MSG_MORE), where a record ends (MSG_EOR), and at the end of a GSO packet of several
    segments (``gso_end``: a full one, or the last one a burst sends)."""
    push = size and ((last and not tcb.more) or record_end or gso_end)
    return ACK | (PSH if push else 0) | (FIN if fin else 0)


def gso_segments(tcb: TCB, mss: int, min_segs: int) -> int:
    """Segments per GSO packet, as Linux sizes them (tcp_tso_autosize): about a millisecond at the
    pacing rate (twice cwnd per RTT in slow start, 1.2 times after), at least ``min_segs``
    (tcp_min_tso_segs), and no more than half the peer's largest window (tcp_xmit_size_goal)."""
    ratio = 2.0 if tcb.cwnd < tcb.ssthresh // 2 else 1.2
    srtt = max(tcb.rtt.srtt, 1e-6)  # Linux keeps microseconds
    per_ms = int(ratio * max(tcb.cwnd, len(tcb.rtx)) / srtt / 1024)
    return max(min_segs, min(per_ms, min(GSO_MAX_SIZE, tcb.max_snd_wnd // 2) // mss))


def send_data_segment(stack: Stack, tcb: TCB, size: int, flags: int, now: float, mss: int) -> None:
    """Send ``size`` new bytes from snd_nxt (and a FIN if flagged) and queue them for retransmission.

    ``mss``: send_mss(tcb), computed once by the caller for all its segments (Linux's mss_now).
    The segment is accounted for (snd_nxt, the queue, the timer) before it
    leaves: a peer on the same stack (loopback) answers it before transmit
    returns, and its ACK must find the segment sent (Linux holds the socket
    lock instead, and processes the ACK after).
    """
    seq = tcb.snd_nxt
    payload = data_at(tcb, seq, size)
    if not tcb.rtx:
        tcb.ca.tx_start(tcb, now - tcb.lsndtime)  # sending again after an idle period
    tcb.lsndtime = now
    end = seq_add(seq, size + (1 if flags & FIN else 0))
    tcb.queue_segment(Sent(seq, end, flags & (FIN | PSH), now))
    tcb.snd_nxt = end
    if size < mss:
        tcb.snd_sml = end
    if flags & FIN:
        tcb.fin_sent = True
    if tcb.ca_state != CA_OPEN:
        tcb.prr_out += 1
    if tcb.first_unacked_at is None:
        tcb.first_unacked_at = now
    arm_rto(stack, tcb, now, restart=False)
    transmit(stack, tcb, seq, payload, flags, new_data=True)


def send_window_probe(stack: Stack, tcb: TCB, now: float) -> bool:
    """The persist timer fired (Linux tcp_write_wakeup): send what the window allows, else probe.

    A window too small for the sender's silly-window rule, or data held by
    TCP_CORK, goes out now (RFC 1122 4.2.3.4's override timeout); a zero
    window gets a probe with an old sequence number. True if data was sent.
    """
    unsent = unsent_bytes(tcb)
    window_left = seq_diff(seq_add(tcb.snd_una, tcb.snd_wnd), tcb.snd_nxt)
    if unsent > 0 and window_left > 0:
        mss = send_mss(tcb)
        send_data_segment(stack, tcb, min(unsent, window_left, mss), ACK | PSH, now, mss)
        tso_packet_sent(stack, tcb, True)
        return True
    stack.counters.tcp["WindowProbes"] += 1
    send_probe(stack, tcb)
    return False


def send_mss(tcb: TCB) -> int:
    """Bytes per segment now (Linux tcp_current_mss): the MSS, at most half the peer's largest
    window, less the room the SACK blocks due in the next segments take.

    A peer offering a window below two segments still gets several segments in
    flight (Linux tcp_bound_to_half_wnd). The MSS was sized for the timestamp
    option alone; a segment that also reports out-of-order data (or a
    duplicate) carries a SACK option, and without this would exceed the path
    MTU and leave as IP fragments.
    """
    mss = bound_to_half_window(tcb, tcb.mss)
    if tcb.sack_ok and (tcb.out_of_order or tcb.dsack is not None):
        blocks = len(tcb.out_of_order) + (tcb.dsack is not None)
        mss -= SACK_OPTION_BASE + SACK_BLOCK_LEN * min(blocks, MAX_SACK_BLOCKS_WITH_TS if tcb.ts_ok else MAX_SACK_BLOCKS)
    return mss


def small_segment_unacked(tcb: TCB) -> bool:
    """Minshall's Nagle (Linux tcp_minshall_check): a sub-MSS segment is still unacknowledged."""
    return seq_gt(tcb.snd_sml, tcb.snd_una) and seq_le(tcb.snd_sml, tcb.snd_nxt)


def arm_rto(stack: Stack, tcb: TCB, now: float, restart: bool = True) -> None:
    if not tcb.rtx:
        tcb.rto_at = math.inf
        tcb.probe_pending = tcb.reo_pending = False
    elif restart or tcb.rto_at == math.inf:
        tcb.probe_pending = tcb.reo_pending = False
        tcb.rto_at = now + tcb.rtt.backed_off(tcb.backoff)
        if tcb.user_timeout and tcb.first_unacked_at is not None:
            # TCP_USER_TIMEOUT: fire no later than the moment to give up (Linux
            # tcp_clamp_rto_to_user_timeout).
            tcb.rto_at = min(tcb.rto_at, tcb.first_unacked_at + tcb.user_timeout)
        tcb.persist_at = math.inf
    stack.tcp.timer_changed(tcb)


def schedule_loss_probe(stack: Stack, tcb: TCB, now: float, advancing: bool) -> None:
    """Arm the tail loss probe in place of the RTO (RFC 8985 7.2; Linux tcp_schedule_loss_probe):
    two smoothed RTTs (plus the delayed-ACK allowance for a lone segment), not after the RTO.

    Only with SACK, in the Open state, on an established connection; ``advancing``: an ACK
    just moved snd_una, so the RTO would run a whole RTO from now.
    """
    if (stack.tcp.config.early_retrans not in (3, 4) or not tcb.rtx or not tcb.sack_ok
            or tcb.ca_state not in (CA_OPEN, CA_CWR) or tcb.state not in CAN_SEND):
        return
    srtt = tcb.rtt.srtt
    if tcb.rtt.samples:
        timeout = 2 * srtt + (tcb.rtt.rto_min if len(tcb.rtx) == 1 else TLP_MIN_TIMEOUT)
    else:
        timeout = RTO_INITIAL
    rto = tcb.rtt.backed_off(tcb.backoff)
    rto_delta = rto if advancing else tcb.rtx[0].sent_at + rto - now  # when the RTO would fire
    if rto_delta > 0:
        timeout = min(timeout, rto_delta)
    tcb.rto_at = now + timeout
    tcb.probe_pending = True
    stack.tcp.timer_changed(tcb)


def arm_persist(stack: Stack, tcb: TCB, now: float) -> None:
    if tcb.persist_at == math.inf:
        tcb.persist_at = now + tcb.rtt.backed_off(tcb.persist_backoff)
        stack.tcp.timer_changed(tcb)


def schedule_ack(stack: Stack, tcb: TCB, full_segment: bool) -> None:
    """Delayed ACK (40 ms, every second full segment at once, quick ACKs at first)."""
    if full_segment:
        tcb.ack_pending += 1
    if tcb.quickacks or tcb.ack_pending >= 2:
        tcb.ack_now = True
        return
    if tcb.delack_at == math.inf:
        tcb.delack_at = stack.clock.now() + stack.tcp.config.delack_min
        stack.tcp.timer_changed(tcb)

