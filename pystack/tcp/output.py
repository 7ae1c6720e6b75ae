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
from ..socket import (
    IP_PMTUDISC_WANT,
    SCM_TSTAMP_SCHED,
    SCM_TSTAMP_SND,
    SOF_TIMESTAMPING_TX_SCHED,
    SOF_TIMESTAMPING_TX_SOFTWARE,
)
from ..wire.ipv4 import PROTO_TCP
from ..wire.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, TcpOptions, build_options, build_tcp
from ..wire.tcp import HEADER_LEN as TCP_HEADER_LEN
from . import mtu
from .mtu import TIMESTAMP_OPTION_LEN
from .rtt import JIFFY, RTO_INITIAL, TCP_TIMEOUT_MIN
from .seq import MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from .tcb import (
    CA_CWR,
    CA_OPEN,
    CA_RECOVERY,
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
    from ..socket import Socket
    from ..stack import Stack
    from .tcb import TcpConfig

MAX_SACK_BLOCKS_WITH_TS = 3
MAX_SACK_BLOCKS = 4
SACK_OPTION_BASE = 4  # two NOPs, kind and length (TCPOLEN_SACK_BASE_ALIGNED)
SACK_BLOCK_LEN = 8
GSO_MAX_SIZE = 65536 - 1 - MAX_TCP_HEADER  # Linux: sk_gso_max_size less MAX_TCP_HEADER
ECN_MASK = 0x03  # the ECN field of the IP TOS byte
ECT_0 = 0x02
CE = 0x03


def ts_now(stack: Stack, tcb: TCB) -> int:
    """The timestamp clock: milliseconds, offset per connection (as Linux)."""
    return (int(stack.clock.now() * 1000) + tcb.ts_offset) & MASK


def receive_space(tcb: TCB) -> int:
    """Bytes the receive buffer may hold for the window (half the buffer, as Linux)."""
    return tcb.sock.rcvbuf // 2


def offered_wscale(config: TcpConfig, sock: Socket) -> int:
    """The window scale a SYN offers (Linux tcp_select_initial_window): the configured one
    (from tcp_rmem[2] and rmem_max), or less when a locked SO_RCVBUF clamps the window."""
    if not sock.rcvbuf_locked:
        return config.window_scale
    clamp = sock.rcvbuf // 2  # tcp_full_space: the window clamp of a locked buffer
    return min(config.window_scale, max(clamp.bit_length() - 1 - 15, 0))


def initial_window(tcb: TCB, mss: int) -> int:
    """The window a SYN or SYN-ACK offers (Linux tcp_select_initial_window): the receive
    space rounded down to a multiple of ``mss``, at most 65535 (the field is unscaled)."""
    space = receive_space(tcb)
    if space > mss:
        space -= space % mss
    return min(space, 0xFFFF)


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
        window = initial_window(tcb, tcb.advmss)
        raw_window = window
    elif flags & SYN:
        options = TcpOptions(
            mss=tcb.advmss,
            wscale=tcb.rcv_wscale if tcb.want_wscale else None,
            sack_permitted=tcb.want_sack,
            ts_val=ts_now(stack, tcb) if tcb.want_ts else None,
            ts_ecr=tcb.ts_recent if tcb.want_ts and flags & ACK else 0,
            fastopen=tcb.fastopen_option,
            fastopen_exp=tcb.fastopen_option_exp,
        )
        # Rounded to the MSS the data will come in: less the timestamps a SYN-ACK agreed to.
        window = initial_window(tcb, tcb.advmss - (TIMESTAMP_OPTION_LEN if flags & ACK and tcb.ts_ok else 0))
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
    if tcb.pmtu_cookie and route.path_mtu != tcb.pmtu_cookie:
        # The route was checked as the segment leaves (Linux __sk_dst_check) and its MTU changed:
        # the next segments are sized for it (tcp_current_mss, tcp_sync_mss); this burst's are not.
        stack.tcp.update_mss(tcb)
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
    blocks = ordered + queue.first_blocks(MAX_SACK_BLOCKS - len(ordered), ordered)
    fin = tcb.ooo_fin
    if fin is None:
        return blocks
    # A FIN that came out of order ends its block: Linux's skb end_seq counts it.
    return [(start, seq_add(end, 1) if end == fin else end) for start, end in blocks]


def send_ack(stack: Stack, tcb: TCB) -> None:
    transmit(stack, tcb, tcb.snd_nxt, b"", ACK)


def send_syn(stack: Stack, tcb: TCB, data: bytes = b"") -> None:
    flags = SYN | ACK if tcb.state == SYN_RECEIVED else SYN
    transmit(stack, tcb, tcb.iss, data, flags)
    tcb.fastopen_option = None  # a retransmission carries no Fast Open option (Linux)


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
    if tcb.state in (CLOSED, LISTEN, SYN_SENT) or tcb.state == SYN_RECEIVED and not tcb.fastopen_passive:
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
    frto_new = tcb.frto_new  # F-RTO's new data first: retransmissions only if none could go
    tcb.frto_new = False
    sent_any = tcb.lost_out > 0 and not frto_new and retransmit_lost(stack, tcb, now)  # Linux: only with lost_out
    in_flight = tcb.in_flight()
    mss = send_mss(tcb)  # once for all that leaves now (Linux's mss_now)
    probe = mtu.probe(stack, tcb, mss, in_flight) if tcb.mtup_enabled else None
    if probe:  # a path MTU probe first (Linux tcp_write_xmit), as one segment of new data
        send_data_segment(stack, tcb, probe, ACK, now, probe)
        in_flight += 1
    if probe == 0:
        sent_new = False  # the probe waits for room, and new data behind it
    else:
        sent_new, in_flight = send_new_data(stack, tcb, now, in_flight, mss, one_packet, packet)
        sent_new = sent_new or bool(probe)
    if frto_new and not sent_new:
        tcb.frto = False  # conventional recovery after all (Linux tcp_xmit_recovery)
        sent_any = retransmit_lost(stack, tcb, now)
        in_flight = tcb.in_flight()
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
    """Retransmit the segments marked lost, as the congestion window allows.

    The lost rest of a packet goes out again as one GSO packet (Linux retransmits a lost skb
    whole, as far as cwnd allows: tcp_xmit_retransmit_queue), so its last segment carries PSH
    when it has several (see send_data_segment)."""
    sent = False
    index = 0
    run = 0  # segments so far in the packet being retransmitted
    while index < len(tcb.rtx):  # by index: retransmit() may split a segment (smaller MSS)
        item = tcb.rtx[index]
        index += 1
        if not retransmit_due(item):
            run = 0
            continue
        if tcb.in_flight() >= tcb.cwnd:
            break
        ends = (item.packet_end or index == len(tcb.rtx) or not retransmit_due(tcb.rtx[index])
                or tcb.in_flight() + 1 >= tcb.cwnd)
        retransmit(stack, tcb, item, now, gso_end=ends and run > 0)
        if item is tcb.rtx[0] and not tcb.reo_pending:
            arm_rto(stack, tcb, now)  # the head resent: a whole RTO from now (Linux)
        run = 0 if ends else run + 1
        sent = True
    return sent


def retransmit_due(item: Sent) -> bool:
    """Marked lost, and neither SACKed nor retransmitted since."""
    return item.lost and not item.in_retransmit and not item.sacked


def retransmit(stack: Stack, tcb: TCB, item: Sent, now: float, probe: bool = False,
               gso_end: bool = False) -> None:
    """Send a queued segment again (at most one MSS of it: the MSS may have shrunk).

    ``probe``: a tail loss probe, which the scoreboard does not count as a retransmission in
    flight (Linux __tcp_retransmit_skb), though Karn's rule ignores its RTT all the same.
    ``gso_end``: the segment ends a retransmitted packet of several segments (PSH on the wire)."""
    length = item.length - (1 if item.flags & SYN else 0) - (1 if item.flags & FIN else 0)
    mss = send_mss(tcb)
    if length > mss and not item.flags & SYN:
        split(tcb, item, mss)
        length = mss
    flags = ACK | (item.flags & (SYN | FIN | PSH)) | (PSH if gso_end else 0)
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
    """Cut a queued segment after ``length`` bytes (after a path MTU decrease); as Linux's
    tcp_fragment, FIN and PSH stay with the tail, and each part is a packet of its own."""
    index = tcb.rtx.index(item)
    rest = Sent(seq_add(item.seq, length), item.end, item.flags & (FIN | PSH), item.sent_at,
                item.retransmits, item.sacked, item.lost, False, item.packet_end)
    item.end = seq_add(item.seq, length)
    item.flags &= ~(FIN | PSH)
    item.packet_end = True
    tcb.queue_segment(rest, index + 1)


def send_new_data(stack: Stack, tcb: TCB, now: float, in_flight: int, mss: int,
                  one_packet: bool = False, packet: int = 0) -> tuple[bool, int]:
    """Send new segments as the windows, Nagle and cork allow; returns (sent any, in flight).

    ``in_flight`` is counted once by the caller and kept up to date here (each new
    segment adds one): counting it per segment walks the whole retransmission queue.
    ``mss``: send_mss(tcb), as the caller found it before anything left.
    """
    sent = False
    # At most half of cwnd per packet, so that two are in flight (Linux tcp_cwnd_test's quota).
    gso = min(gso_segments(tcb, mss, stack.tcp.config.min_tso_segs), max(tcb.cwnd >> 1, 1))
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
        flags = segment_flags(tcb, size, last and fin_due, last, record_end)
        send_data_segment(stack, tcb, size, flags, now, mss, packet if packet_end else 0)
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
    burst_ended(stack, tcb, packet, chunk)
    return sent, in_flight


def burst_ended(stack: Stack, tcb: TCB, packet: int, chunk: int) -> None:
    """Sending stopped: the last segment ends its GSO packet for a retransmission of it, and the
    skb piece it ends for the send buffer (skb_sent); a write sending as it queues carries the
    open packet's count into its next send (``gso_packet``)."""
    if packet and tcb.rtx:
        tcb.rtx[-1].packet_end = True
    tso_packet_sent(stack, tcb, chunk > 0)
    tcb.gso_packet = packet


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


def segment_flags(tcb: TCB, size: int, fin: bool, last: bool, record_end: bool) -> int:
    """The flags a new segment keeps for its retransmissions (Linux's skb flags). PSH as Linux
    marks it (tcp_mark_push): where the queued data ends (unless the write said MSG_MORE), where
    a record ends (MSG_EOR), and where a forced push was marked."""
    push = size and ((last and not tcb.more) or record_end or (tcb.push_marks and marked_push(tcb, size)))
    return ACK | (PSH if push else 0) | (FIN if fin else 0)


def marked_push(tcb: TCB, size: int) -> bool:
    """Whether the next ``size`` bytes end where a PSH was marked as the write was queued (Linux's
    forced push: see fill_skbs and mark_write_end); the marks passed are dropped."""
    end = seq_add(tcb.snd_nxt, size)
    marks = tcb.push_marks
    while marks and seq_lt(marks[0], end):
        marks.popleft()
    if marks and marks[0] == end:
        marks.popleft()
        return True
    return False


def gso_segments(tcb: TCB, mss: int, min_segs: int) -> int:
    """Segments per GSO packet, as Linux sizes them (tcp_tso_autosize): about a millisecond at the
    pacing rate (twice cwnd per RTT in slow start, 1.2 times after), at least ``min_segs``
    (tcp_min_tso_segs), and no more than half the peer's largest window (tcp_xmit_size_goal)."""
    ratio = 2.0 if tcb.cwnd < tcb.ssthresh // 2 else 1.2
    srtt = max(tcb.rtt.srtt, 1e-6)  # Linux keeps microseconds
    per_ms = int(ratio * max(tcb.cwnd, len(tcb.rtx)) / srtt / 1024)
    return max(min_segs, min(per_ms, min(GSO_MAX_SIZE, tcb.max_snd_wnd // 2) // mss))


def send_data_segment(stack: Stack, tcb: TCB, size: int, flags: int, now: float, mss: int,
                      packet: int = 1) -> None:
    """Send ``size`` new bytes from snd_nxt (and a FIN if flagged) and queue them for retransmission.

    ``mss``: send_mss(tcb), computed once by the caller for all its segments (Linux's mss_now).
    ``packet``: the segments of the GSO packet the segment ends (0: it does not end one). Linux
    sends the last segment of a packet of several with PSH (__tcp_transmit_skb, to flush the
    receiver's GRO) on the copy it transmits, not on the queued skb: a retransmission of the
    segment alone carries no PSH for it.
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
    tcb.queue_segment(Sent(seq, end, flags & (FIN | PSH), now, packet_end=packet > 0))
    tcb.snd_nxt = end
    if size < mss:
        tcb.snd_sml = end
    if flags & FIN:
        tcb.fin_sent = True
    if tcb.ca_state != CA_OPEN:
        tcb.prr_out += 1
    arm_rto(stack, tcb, now, restart=False)
    if tcb.tx_stamps:
        tx_timestamps_sent(tcb, seq, payload, now)
    transmit(stack, tcb, seq, payload, flags | (PSH if packet > 1 else 0), new_data=True)


def tx_timestamps_sent(tcb: TCB, seq: int, payload: bytes, now: float) -> None:
    """SO_TIMESTAMPING: the segment from ``seq`` carries written bytes asked about; pystack hands it
    to the link at once, so it is scheduled and sent now (SCM_TSTAMP_SCHED, then _SND)."""
    end = seq_add(seq, len(payload))
    for stamp in tcb.tx_stamps:
        key, flags, sent = stamp
        if not seq_lt(key, end):
            break
        if sent is None:  # (a byte not yet sent is at or after seq, the send point)
            stamp[2] = payload
            if flags & SOF_TIMESTAMPING_TX_SCHED:
                tcb.sock.tx_timestamp(now, SCM_TSTAMP_SCHED, key, payload)
            if flags & SOF_TIMESTAMPING_TX_SOFTWARE:
                tcb.sock.tx_timestamp(now, SCM_TSTAMP_SND, key, payload)


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


def restart_after_idle(stack: Stack, tcb: TCB, now: float) -> None:
    """New data after more than an RTO with nothing in flight: the window the connection
    learnt may no longer hold, so cwnd falls back toward the initial window, halved per RTO
    idle (RFC 5681 4.1; Linux tcp_slow_start_after_idle_check and tcp_cwnd_restart)."""
    idle = now - tcb.lsndtime
    rto = tcb.rtt.rto
    if not stack.tcp.config.slow_start_after_idle or tcb.rtx or idle <= rto:
        return
    restart = min(stack.tcp.config.initial_cwnd, tcb.cwnd)
    if tcb.ca_state not in (CA_CWR, CA_RECOVERY):  # tcp_current_ssthresh
        tcb.ssthresh = max(tcb.ssthresh, (tcb.cwnd >> 1) + (tcb.cwnd >> 2))
    cwnd = tcb.cwnd
    idle -= rto
    while idle > 0 and cwnd > restart:
        cwnd >>= 1
        idle -= rto
    tcb.cwnd = max(cwnd, restart)


def arm_rto(stack: Stack, tcb: TCB, now: float, restart: bool = True) -> None:
    if not tcb.rtx:
        tcb.rto_at = math.inf
        tcb.probe_pending = tcb.reo_pending = False
    elif restart or tcb.rto_at == math.inf:
        tcb.probe_pending = tcb.reo_pending = False
        tcb.rto_at = now + tcb.rtt.backed_off(tcb.backoff)
        if tcb.user_timeout and tcb.first_retransmit_at is not None:
            # TCP_USER_TIMEOUT: fire no later than the moment to give up, counted from the
            # first retransmission (Linux tcp_clamp_rto_to_user_timeout, retrans_stamp).
            give_up = tcb.first_retransmit_at + tcb.user_timeout
            tcb.rto_at = min(tcb.rto_at, give_up if give_up > now else now + JIFFY)
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
        timeout = 2 * srtt + (tcb.rtt.rto_min if len(tcb.rtx) == 1 else TCP_TIMEOUT_MIN)
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


def schedule_ack(stack: Stack, tcb: TCB, received: int) -> None:
    """Delayed ACK (40 ms; quick ACKs at first). ``received``: bytes of the segment just taken,
    counted when it is a full one: more than one MSS of them unacknowledged is acknowledged at
    once, two full segments as one large (GRO) segment (Linux __tcp_ack_snd_check counts bytes)."""
    if received >= tcb.mss:
        tcb.ack_pending += received
    if tcb.quickacks or tcb.ack_pending > tcb.mss:
        tcb.ack_now = True
        return
    if tcb.delack_at == math.inf:
        tcb.delack_at = stack.clock.now() + stack.tcp.config.delack_min
        stack.tcp.timer_changed(tcb)

