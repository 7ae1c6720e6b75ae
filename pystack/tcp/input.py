"""Segment arrival (RFC 9293 section 3.10.7), with RFC 5961 and RFC 7323 checks.

The order of checks follows the RFC's "SEGMENT ARRIVES" text; each
rejected segment is charged to one drop reason (``tcp.<reason>``).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .. import ip
from ..addr import is_multicast
from ..errors import Malformed
from ..route import cached_route
from ..socket import IP_PMTUDISC_WANT, SCM_TSTAMP_ACK, SKB_OVERHEAD, SOF_TIMESTAMPING_TX_ACK
from ..wire.ipv4 import PROTO_TCP, IPv4Packet
from ..wire.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, TcpSegment, build_tcp, parse_tcp
from . import fastopen, mtu, recovery, syncookies
from .output import (
    CE,
    ECN_MASK,
    arm_rto,
    check_space,
    offered_wscale,
    schedule_ack,
    schedule_loss_probe,
    send_ack,
    send_syn,
    tcp_output,
    ts_now,
    window_to_advertise,
)
from .rtt import TCP_TIMEOUT_MIN
from .seq import seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from .tcb import (
    CAN_RECEIVE,
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    SYN_RECEIVED,
    SYN_SENT,
    TCB,
    TIME_WAIT,
    URG_NOTYET,
    URG_VALID,
    Sent,
)

if TYPE_CHECKING:
    from ..stack import Stack

PAWS_IDLE = 24 * 24 * 3600.0  # RFC 7323: ts_recent older than 24 days is stale
PAWS_WINDOW = 1  # Linux TCP_PAWS_WINDOW: a TS value one tick old is reordering, not a wrapped sequence
MAX_SACK_RECENT = 8  # out-of-order arrivals remembered to order SACK blocks
RTO_FALLBACK = 3.0  # RFC 6298 5.7: the RTO once data flows after a retransmitted SYN without a sample


def tcp_input(stack: Stack, header: IPv4Packet, packet: bytes) -> None:
    counters = stack.counters
    try:
        seg = parse_tcp(header.payload, header.src, header.dst)
    except Malformed as bad:
        counters.malformed("tcp", bad.reason)
        return
    counters.tcp["InSegs"] += 1
    if is_multicast(header.dst) or stack.is_broadcast(header.dst):
        counters.drop("tcp", "not_unicast")
        return
    tcb = stack.tcp.conns.get((header.dst, seg.dport, header.src, seg.sport))
    if tcb is not None and tcb.state == TIME_WAIT and seg.flags & (SYN | ACK | RST) == SYN:
        listener = stack.tcp.listener(header.dst, seg.dport)
        if listener is not None and timewait_accepts_syn(tcb, seg, stack.clock.now()):
            # Linux tcp_timewait_state_process (TCP_TW_SYN): a new incarnation of the connection;
            # the old one goes, and the new starts its sequence space beyond the old one's.
            isn = seq_add(tcb.snd_nxt, 65535 + 2) or 1
            stack.tcp.done(tcb)
            listen_input(stack, listener, header, seg, isn)
            return
    if tcb is None:
        listener = stack.tcp.listener(header.dst, seg.dport)
        if listener is None:
            counters.drop("tcp", "no_socket")
            reply_reset(stack, header, seg)
            return
        tcb = listen_input(stack, listener, header, seg)
        if tcb is None:
            return
    if tcb.ecn_ok and seg.payload:
        ecn_input(tcb, seg, header.tos)
    if tcb.state == SYN_SENT:
        syn_sent_input(stack, tcb, seg)
    else:
        segment_arrives(stack, tcb, seg)
    if tcb.state != CLOSED:
        if tcb.output is None:
            tcp_output(stack, tcb)
        else:
            tcb.output()  # the same, specialized for this connection
        if tcb.nospace:
            check_space(stack, tcb)  # after sending, as Linux's tcp_data_snd_check
        stack.tcp.timer_changed(tcb)


def reply_reset(stack: Stack, header: IPv4Packet, seg: TcpSegment) -> None:
    """RST for a segment that matches no connection (RFC 9293 3.10.7.1); never for a RST."""
    if seg.flags & RST:
        return
    if seg.flags & ACK:
        seq, ack, flags = seg.ack, 0, RST
    else:
        seq, ack, flags = 0, seq_add(seg.seq, seg.seg_len), RST | ACK
    send_bare(stack, header.dst, seg.dport, header.src, seg.sport, seq, ack, flags)


def send_bare(stack: Stack, src: int, sport: int, dst: int, dport: int, seq: int, ack: int, flags: int) -> None:
    """A segment sent on behalf of no connection (resets)."""
    route = stack.routes.lookup(dst, stack.clock.now())
    if route is None:
        stack.counters.ip["OutNoRoutes"] += 1
        return
    segment = build_tcp(sport, dport, seq, ack, flags, 0, b"", b"", src, dst)
    stack.counters.tcp["OutSegs"] += 1
    if flags & RST:
        stack.counters.tcp["OutRsts"] += 1
    ip.ip_output(stack, None, route, src, dst, PROTO_TCP, segment, stack.default_ttl, 0, IP_PMTUDISC_WANT)


# ---------------------------------------------------------------- LISTEN


def listen_input(stack: Stack, listener: TCB, header: IPv4Packet, seg: TcpSegment, isn: int = 0) -> TCB | None:
    """A segment for a listener; returns the connection a SYN cookie's ACK rebuilt, to take the
    segment as an established connection would. ``isn``: the ISN a SYN's connection takes (0: a
    fresh one)."""
    counters = stack.counters
    cfg = stack.tcp.config
    if seg.flags & RST:
        counters.drop("tcp", "rst_to_listener")
        return None
    if seg.flags & ACK:
        if not seg.flags & SYN and cookies_expected(stack, listener):
            child = cookie_check(stack, listener, header, seg)
            if child is not None:
                return child
        counters.drop("tcp", "ack_to_listener")
        reply_reset(stack, header, seg)
        return None
    if not seg.flags & SYN:
        counters.drop("tcp", "no_syn_to_listener")
        return None
    want_cookie = False
    if (cfg.syncookies == 2 or listener.syn_queue > listener.backlog) and not isn:
        # Linux tcp_conn_request / tcp_syn_flood_action: the SYN queue holds as many half-open
        # connections as the listen backlog (inet_csk_reqsk_queue_is_full).
        if not cfg.syncookies:
            counters.tcp["TCPReqQFullDrop"] += 1
            counters.tcp["ListenDrops"] += 1
            counters.drop("tcp", "syn_queue_full")
            return None
        counters.tcp["TCPReqQFullDoCookies"] += 1
        want_cookie = True
    if len(listener.accept_queue) > listener.backlog:
        counters.tcp["ListenOverflows"] += 1
        counters.tcp["ListenDrops"] += 1
        counters.drop("tcp", "accept_queue_full")
        return None
    if want_cookie:
        send_cookie(stack, listener, header, seg)
        return None
    child = stack.tcp.new_child(listener, header.dst, seg.dport, header.src, seg.sport)
    if isn:
        child.iss = isn
    accept_syn(stack, child, seg)
    listener.syn_queue += 1
    counters.tcp["PassiveOpens"] += 1
    if fastopen.syn_input(stack, listener, child, header.src, header.dst, seg):
        listener.accept_queue.append(child)  # Fast Open: to be accepted (and read) before the ACK
        stack.wake(listener.sock)
    start_handshake_segment(stack, child)
    return None


def ecn_input(tcb: TCB, seg: TcpSegment, tos: int) -> None:
    """The receiver's part of ECN (RFC 3168 6.1.3): a CE mark is echoed with ECE on every
    segment until one with CWR arrives (Linux: the CWR first, then the new mark)."""
    if seg.flags & CWR:
        tcb.ecn_demand_cwr = False
        tcb.ack_now = True  # the sender's cwnd may be small: ACK at once
    if tos & ECN_MASK == CE and not tcb.ecn_demand_cwr:
        tcb.ecn_demand_cwr = True
        tcb.ack_now = True


def accept_syn(stack: Stack, child: TCB, seg: TcpSegment) -> None:
    """A passive connection takes the peer's SYN: SYN-RECEIVED, options, receive sequence space."""
    child.state = SYN_RECEIVED
    # ECN asked for with ECE and CWR; accepted unless tcp_ecn is 0 (RFC 3168 6.1.1).
    child.ecn_ok = bool(stack.tcp.config.ecn and seg.flags & ECE and seg.flags & CWR)
    negotiate_options(stack, child, seg, offered=False)
    child.irs = seg.seq
    child.rcv_nxt = seq_add(seg.seq, 1)
    child.rcv_adv = child.rcv_edge = child.rcv_wup = child.rcv_nxt
    child.snd_wnd = seg.window
    child.max_snd_wnd = seg.window
    child.snd_wl1 = seg.seq


def cookies_expected(stack: Stack, listener: TCB) -> bool:
    """Whether an ACK to a listener may carry a cookie: the queue overflowed in the last two
    minutes, or cookies are always on (Linux tcp_synq_no_recent_overflow)."""
    cfg = stack.tcp.config
    if cfg.syncookies == 2:
        return True
    return bool(cfg.syncookies) and stack.clock.now() - listener.syn_overflow_at < syncookies.VALID_AFTER_OVERFLOW


def send_cookie(stack: Stack, listener: TCB, header: IPv4Packet, seg: TcpSegment) -> None:
    """Answer a SYN with a SYN cookie, keeping no state (Linux cookie_v4_init_sequence): a TCB
    that is in no table sends the SYN-ACK and is forgotten."""
    now = stack.clock.now()
    probe = stack.tcp.make_child(listener, header.dst, seg.dport, header.src, seg.sport)
    accept_syn(stack, probe, seg)
    if not probe.ts_ok:  # no timestamps to carry them: a cookie loses window scaling and SACK (Linux)
        probe.want_wscale = probe.want_sack = probe.sack_ok = False
        probe.snd_wscale = probe.rcv_wscale = 0
    probe.iss = syncookies.make_cookie(stack.tcp.cookie_key, header.src, header.dst, seg.sport, seg.dport,
                                       seg.seq, probe.peer_mss, now)
    if probe.ts_ok:
        clock = int(now * 1000)
        value = syncookies.cookie_timestamp(
            seq_add(clock, stack.tcp.stateless_ts_offset(probe)),
            probe.snd_wscale if probe.want_wscale else None, probe.sack_ok)
        probe.ts_offset = seq_add(value, -clock)  # so that this SYN-ACK's TS value is the cookie's
    listener.syn_overflow_at = now
    stack.counters.tcp["SyncookiesSent"] += 1
    send_syn(stack, probe)


def cookie_check(stack: Stack, listener: TCB, header: IPv4Packet, seg: TcpSegment) -> TCB | None:
    """The connection an ACK's SYN cookie stands for (Linux cookie_v4_check), in SYN-RECEIVED;
    None if the ACK carries no valid cookie."""
    counters = stack.counters
    cfg = stack.tcp.config
    now = stack.clock.now()
    peer_isn = seq_add(seg.seq, -1)
    iss = seq_add(seg.ack, -1)
    mss = syncookies.check_cookie(stack.tcp.cookie_key, header.src, header.dst, seg.sport, seg.dport,
                                  peer_isn, iss, now)
    if mss is None:
        counters.tcp["SyncookiesFailed"] += 1
        return None
    counters.tcp["SyncookiesRecv"] += 1
    opts = seg.options
    ts_ok = opts.ts_val is not None
    wscale, sack = syncookies.timestamp_options(opts.ts_ecr) if ts_ok else (None, False)
    if ts_ok and not cfg.timestamps or sack and not cfg.sack:
        return None  # options we would not have offered (Linux cookie_timestamp_decode)
    if len(listener.accept_queue) > listener.backlog:
        counters.tcp["ListenOverflows"] += 1  # Linux tcp_v4_syn_recv_sock: no room, the ACK is dropped
        counters.tcp["ListenDrops"] += 1
        counters.drop("tcp", "accept_queue_full")
        return None
    child = stack.tcp.new_child(listener, header.dst, seg.dport, header.src, seg.sport)
    child.state = SYN_RECEIVED
    child.iss = child.snd_una = child.snd_sml = iss
    child.snd_nxt = child.snd_buf_seq = child.pushed_seq = seg.ack
    child.irs = peer_isn
    child.rcv_nxt = child.rcv_wup = seg.seq
    child.peer_mss = mss
    child.sack_ok = child.want_sack = sack
    child.want_wscale = wscale is not None
    child.snd_wscale = wscale or 0
    child.rcv_wscale = offered_wscale(cfg, child.sock) if wscale is not None else 0
    child.ts_ok = child.want_ts = ts_ok
    if ts_ok:
        child.ts_offset = stack.tcp.stateless_ts_offset(child)
        child.ts_recent = opts.ts_val or 0
        child.ts_recent_stamp = now
    stack.tcp.update_mss(child)
    # The window our SYN-ACK offered (unscaled, as on every SYN).
    child.rcv_adv = child.rcv_edge = seq_add(child.rcv_nxt, min(window_to_advertise(child), 0xFFFF))
    child.snd_wl1 = peer_isn
    listener.syn_queue += 1  # counted as any half-open connection until the ACK completes it
    counters.tcp["PassiveOpens"] += 1
    return child


def start_handshake_segment(stack: Stack, tcb: TCB, data: int = 0) -> None:
    """Send our SYN (or SYN-ACK) and queue it for retransmission; a Fast Open SYN carries the
    first ``data`` bytes of the send buffer, queued apart: a retransmitted SYN carries none (Linux)."""
    now = stack.clock.now()
    tcb.snd_una = tcb.iss
    tcb.snd_nxt = seq_add(tcb.iss, 1)
    tcb.snd_buf_seq = tcb.pushed_seq = tcb.snd_nxt
    tcb.snd_sml = tcb.iss
    tcb.clear_queue()
    tcb.queue_segment(Sent(tcb.iss, tcb.snd_nxt, SYN, now))
    if data:
        tcb.queue_segment(Sent(tcb.snd_nxt, seq_add(tcb.snd_nxt, data), PSH, now))
        tcb.snd_nxt = seq_add(tcb.snd_nxt, data)
    tcb.want_ecn = tcb.state == SYN_SENT and stack.tcp.config.ecn == 1
    send_syn(stack, tcb, bytes(tcb.send_buffer[:data]))
    arm_rto(stack, tcb, now)


def negotiate_options(stack: Stack, tcb: TCB, seg: TcpSegment, offered: bool) -> None:
    """Settle MSS, window scale, SACK and timestamps from the peer's SYN (or SYN-ACK).

    ``offered``: we sent the SYN (active open), so an option counts only
    if we offered it too.
    """
    opts = seg.options
    tcb.peer_mss = opts.mss if opts.mss else 536
    if opts.wscale is not None and (tcb.want_wscale or not offered):
        tcb.snd_wscale = min(opts.wscale, 14)
        tcb.rcv_wscale = offered_wscale(stack.tcp.config, tcb.sock) if not offered else tcb.rcv_wscale
        tcb.want_wscale = True
    else:
        tcb.snd_wscale = tcb.rcv_wscale = 0
        tcb.want_wscale = False
    tcb.sack_ok = opts.sack_permitted and tcb.want_sack and stack.tcp.config.sack
    tcb.want_sack = tcb.sack_ok
    tcb.ts_ok = opts.ts_val is not None and tcb.want_ts and stack.tcp.config.timestamps
    tcb.want_ts = tcb.ts_ok
    if tcb.ts_ok:
        tcb.ts_recent = opts.ts_val or 0
        tcb.ts_recent_stamp = stack.clock.now()
    stack.tcp.update_mss(tcb)


# ---------------------------------------------------------------- SYN-SENT


def syn_sent_input(stack: Stack, tcb: TCB, seg: TcpSegment) -> None:
    counters = stack.counters
    if seg.flags & ACK and (seq_le(seg.ack, tcb.iss) or seq_gt(seg.ack, tcb.snd_nxt)):
        counters.drop("tcp", "syn_sent_bad_ack")
        if not tcb.retransmits:
            # Linux: the ACK may answer an earlier incarnation (its FIN or RST lost), so the
            # SYN goes again at once rather than after the first RTO.
            tcb.rto_at = stack.clock.now() + TCP_TIMEOUT_MIN
        if not seg.flags & RST:
            send_bare(stack, tcb.local_addr, tcb.local_port, tcb.remote_addr, tcb.remote_port, seg.ack, 0, RST)
        return
    if seg.flags & RST:
        if seg.flags & ACK:
            stack.tcp.abort(tcb, errno.ECONNREFUSED)
        else:
            counters.drop("tcp", "syn_sent_rst_without_ack")
        return
    if not seg.flags & SYN:
        counters.drop("tcp", "syn_sent_no_syn")
        return
    negotiate_options(stack, tcb, seg, offered=True)
    tcb.ecn_ok = tcb.want_ecn and bool(seg.flags & ECE) and not seg.flags & CWR  # an ECN-setup SYN-ACK
    tcb.irs = seg.seq
    tcb.rcv_nxt = seq_add(seg.seq, 1)
    tcb.rcv_adv = tcb.rcv_edge = tcb.rcv_wup = tcb.rcv_nxt
    if seg.flags & ACK:
        syn_retransmitted = tcb.retransmits > 0
        handshake_acked(stack, tcb, seg)
        if seq_gt(seg.ack, tcb.snd_una):  # Fast Open: the SYN's data acknowledged too
            cwnd = tcb.cwnd
            process_ack(stack, tcb, seg, stack.clock.now())
            tcb.cwnd = cwnd  # Linux takes that ACK before it sets the initial window
        if (tcb.syn_fastopen or tcb.syn_data) and fastopen.synack_input(stack, tcb, seg, syn_retransmitted):
            for item in tcb.rtx:
                tcb.mark_lost(item)  # what the SYN carried and was not acknowledged goes again now
        tcb.ack_now = True
        return
    tcb.state = SYN_RECEIVED  # simultaneous open (RFC 9293 3.5)
    tcb.snd_wnd = seg.window
    tcb.snd_wl1 = seg.seq
    send_syn(stack, tcb)


def handshake_acked(stack: Stack, tcb: TCB, seg: TcpSegment) -> None:
    """Our SYN is acknowledged: the connection is established."""
    now = stack.clock.now()
    sent = tcb.retire_head() if tcb.rtx else None
    if sent is not None and sent.retransmits == 0:
        tcb.rtt.sample(now - sent.sent_at)
    elif tcb.ts_ok and seg.options.ts_ecr:
        tcb.rtt.sample(max(seq_diff(ts_now(stack, tcb), seg.options.ts_ecr), 0) / 1000)
    elif sent is not None:
        tcb.rtt.rto = max(tcb.rtt.rto, RTO_FALLBACK)  # RFC 6298 5.7 (Linux TCP_TIMEOUT_FALLBACK)
    tcb.snd_una = seq_add(tcb.iss, 1)  # the rest of the ACK (Fast Open: data sent since) is an ACK's
    tcb.snd_wnd = seg.window if seg.flags & SYN else seg.window << tcb.snd_wscale
    tcb.max_snd_wnd = max(tcb.max_snd_wnd, tcb.snd_wnd)  # the SYN's window counts too
    tcb.snd_wl1 = seg.seq
    tcb.snd_wl2 = seg.ack
    tcb.backoff = 0
    tcb.retransmits = 0
    mtu.mtup_init(stack, tcb)  # Linux tcp_init_transfer
    if not tcb.fastopen_passive:  # a Fast Open connection started its window with the SYN's data
        # RFC 6928 / Linux tcp_init_transfer: after a lost SYN (more than one retransmission), start at 1.
        route = cached_route(stack, tcb.sock)
        initial = route.initcwnd if route is not None and route.initcwnd else stack.tcp.config.initial_cwnd
        tcb.cwnd = 1 if sent is not None and sent.retransmits > 1 else initial
        tcb.ca.init(tcb, now)
    tcb.quickacks = stack.tcp.config.max_quickacks
    tcb.state = ESTABLISHED
    tcb.last_received_at = now
    arm_rto(stack, tcb, now)
    stack.tcp.established(tcb)


# ---------------------------------------------------------------- synchronized states


def segment_arrives(stack: Stack, tcb: TCB, seg: TcpSegment) -> None:
    counters = stack.counters
    now = stack.clock.now()
    if tcb.ts_ok and seg.options.ts_val is not None and not seg.flags & RST:  # a RST passes (Linux)
        if paws_discard(tcb, seg, now):
            counters.tcp["PAWSEstab"] += 1
            counters.drop("tcp", "paws")
            tcb.ack_now = True
            return
    if tcb.state == SYN_RECEIVED and seg.flags & (SYN | ACK | RST) == SYN and seg.seq == tcb.irs:
        send_syn(stack, tcb)  # the peer did not get our SYN-ACK: answer its retransmitted SYN (as Linux)
        return
    if (
        tcb.state == SYN_RECEIVED and tcb.parent is None and seg.flags & (SYN | ACK | RST) == SYN | ACK
        and seg.seq == seq_add(tcb.rcv_nxt, -1) and seg.ack == tcb.snd_nxt and not seg.payload
    ):
        # Simultaneous open: the peer's SYN-ACK acknowledges our SYN (RFC 9293 3.5); Linux
        # accepts it (it would otherwise be out of window) and completes the handshake.
        tcb.last_received_at = now
        handshake_acked(stack, tcb, seg)
        tcb.ack_now = True  # and, as Linux does, acknowledge it
        return
    if seg.flags & RST and tcb.state in (CLOSE_WAIT, LAST_ACK, CLOSING) and seg.seq == seq_add(tcb.rcv_nxt, -1):
        reset_received(stack, tcb)  # a RST sequenced at the peer's FIN (Linux tcp_reset_check)
        return
    if not acceptable(tcb, seg):
        counters.drop("tcp", "out_of_window")
        if seg.flags & SYN:
            challenge_ack(stack, tcb)  # RFC 5961 4.2: a SYN, whatever its sequence number
        elif not seg.flags & RST:
            # Linux tcp_oow_rate_limited: a segment without data or FIN may be one side of an
            # ACK loop, so its duplicate ACK is rate limited per socket.
            if not (seg.payload or seg.flags & FIN) and oow_rate_limited(
                stack, tcb, "TCPACKSkippedTimeWait" if tcb.state == TIME_WAIT else "TCPACKSkippedSeq"
            ):
                return
            tcb.ack_now = True
            end = seq_add(seg.seq, len(seg.payload))
            if seg.payload and tcb.sack_ok and seq_le(end, tcb.rcv_nxt) and seq_ge(seg.seq, tcb.irs):
                tcb.dsack = (seg.seq, end)  # old data again: D-SACK it (RFC 2883, Linux tcp_dsack_set)
            if tcb.state == TIME_WAIT and seg.flags & ACK:
                # A retransmitted FIN (our last ACK was lost): acknowledge it and restart the
                # 2 MSL timeout (RFC 9293 3.10.7.4; Linux tcp_timewait_state_process).
                tcb.timewait_at = now + 2 * stack.tcp.config.msl
        return
    if seg.flags & RST:
        if seg.seq == tcb.rcv_nxt:
            reset_received(stack, tcb)
        else:
            challenge_ack(stack, tcb)
            counters.drop("tcp", "rst_in_window")
        return
    if seg.flags & SYN:
        challenge_ack(stack, tcb)  # RFC 5961 4.2, also for SYN-RECEIVED and TIME-WAIT
        counters.drop("tcp", "syn_in_window")
        return
    if not seg.flags & ACK:
        counters.drop("tcp", "no_ack")
        return
    tcb.last_received_at = now
    tcb.keepalive_probes_out = 0
    ts_val = seg.options.ts_val
    if tcb.ts_ok and ts_val is not None and seq_le(seg.seq, tcb.rcv_wup) and paws_check(tcb, ts_val, now, 0):
        # Linux tcp_replace_ts_recent: only a segment at the left edge of the window last
        # advertised (RFC 7323 4.3: Last.ACK.sent) gives the TS value to echo.
        tcb.ts_recent = ts_val
        tcb.ts_recent_stamp = now
    if tcb.state == SYN_RECEIVED:
        if not (seq_lt(tcb.snd_una, seg.ack) and seq_le(seg.ack, tcb.snd_nxt)):
            counters.drop("tcp", "syn_received_bad_ack")
            send_bare(stack, tcb.local_addr, tcb.local_port, tcb.remote_addr, tcb.remote_port, seg.ack, 0, RST)
            return
        parent = tcb.parent
        if parent is not None and not tcb.fastopen_passive and len(parent.accept_queue) > parent.backlog:
            # Linux tcp_v4_syn_recv_sock: no room to queue the connection; drop the ACK and
            # let the SYN-ACK retransmission try again later.
            counters.tcp["ListenOverflows"] += 1
            counters.tcp["ListenDrops"] += 1
            counters.drop("tcp", "accept_queue_full")
            return
        handshake_acked(stack, tcb, seg)
    if seq_gt(seg.ack, tcb.snd_nxt):
        counters.drop("tcp", "ack_of_unsent")
        challenge_ack(stack, tcb)  # RFC 9293: send an ACK and drop; Linux: a (rate-limited) challenge ACK
        return
    if seq_lt(seg.ack, seq_add(tcb.snd_una, -min(tcb.max_snd_wnd, tcb.bytes_acked))):
        counters.drop("tcp", "ack_too_old")
        challenge_ack(stack, tcb)  # RFC 5961 5.2; the window is capped by the bytes acked so far (Linux)
        return
    if seq_ge(seg.ack, tcb.snd_una):
        process_ack(stack, tcb, seg, now)
    elif tcb.sack_ok and seg.options.sack_blocks and recovery.apply_sack(
            stack, tcb, seg.options.sack_blocks, now, recovery.fack(tcb))[0]:
        recovery.on_old_ack(stack, tcb)  # a reordered ACK: its SACK blocks still count (Linux)
    if tcb.state == CLOSED:
        return
    fin_acked = tcb.fin_sent and tcb.snd_una == tcb.snd_nxt
    if fin_acked:
        if tcb.state == FIN_WAIT_1:
            tcb.state = FIN_WAIT_2
            if tcb.orphan:
                tcb.fin_wait2_at = now + stack.tcp.config.fin_timeout
        elif tcb.state == CLOSING:
            enter_time_wait(stack, tcb)
        elif tcb.state == LAST_ACK:
            stack.tcp.done(tcb)
            return
    if tcb.state == TIME_WAIT:
        if seg.flags & FIN:
            tcb.ack_now = True
            tcb.timewait_at = now + 2 * stack.tcp.config.msl
        return
    data = seg.payload
    if seg.flags & URG or tcb.urg_data == URG_NOTYET:
        urgent_arrives(tcb, seg)
    if data:
        if tcb.state not in CAN_RECEIVE:
            counters.drop("tcp", "data_after_fin")
        elif tcb.shut_rd and tcb.state in (FIN_WAIT_1, FIN_WAIT_2):
            # RFC 1122 4.2.2.13 / Linux: data after the application closed (or shut down both
            # ways) is answered by a RST, sequenced as for a port without a socket.
            stack.counters.tcp["AbortOnData"] += 1
            send_bare(stack, tcb.local_addr, tcb.local_port, tcb.remote_addr, tcb.remote_port, seg.ack, 0, RST)
            stack.tcp.abort(tcb, errno.ECONNRESET)
            return
        else:
            receive_data(stack, tcb, seg.seq, data, seg.flags & FIN)
            return
    if seg.flags & FIN:
        fin_arrived(stack, tcb, seq_add(seg.seq, len(data)))
        if len(tcb.recv_buffer) > tcb.sock.rcvbuf:
            tcb.ack_now = True  # Linux: receive memory exhausted, acknowledged now (ICSK_ACK_NOMEM)


def timewait_accepts_syn(tcb: TCB, seg: TcpSegment, now: float) -> bool:
    """A SYN may reopen a connection in TIME-WAIT (Linux tcp_timewait_state_process, RFC 6191):
    its TS value is not rejected by PAWS, and its sequence number is beyond the old connection's,
    or its TS value newer than the last one seen."""
    ts_val = seg.options.ts_val
    if ts_val is not None and tcb.ts_ok and not paws_check(tcb, ts_val, now, 0):
        return False
    return seq_gt(seg.seq, tcb.rcv_nxt) or (ts_val is not None and seq_lt(tcb.ts_recent, ts_val))


def paws_check(tcb: TCB, ts_val: int, now: float, window: int) -> bool:
    """The TS value passes PAWS (Linux tcp_paws_check): at most ``window`` ticks older than
    ts_recent, or ts_recent is stale (24 days idle) or was never set (0)."""
    return seq_diff(tcb.ts_recent, ts_val) <= window or now - tcb.ts_recent_stamp >= PAWS_IDLE or not tcb.ts_recent


def paws_discard(tcb: TCB, seg: TcpSegment, now: float) -> bool:
    """Linux tcp_paws_discard: the TS value is older than TCP_PAWS_WINDOW allows, and the
    segment is not a reordered duplicate ACK (tcp_disordered_ack)."""
    ts_val = seg.options.ts_val or 0
    return not paws_check(tcb, ts_val, now, PAWS_WINDOW) and not disordered_ack(tcb, seg, ts_val)


def disordered_ack(tcb: TCB, seg: TcpSegment, ts_val: int) -> bool:
    """A pure duplicate ACK at rcv_nxt that moves no window, with a TS value within an RTO of
    ts_recent: a reordered ACK, harmless to accept (Linux tcp_disordered_ack)."""
    return (
        bool(seg.flags & ACK) and seg.seg_len == 0 and seg.seq == tcb.rcv_nxt and seg.ack == tcb.snd_una
        and not may_update_window(tcb, seg.ack, seg.seq, seg.window << tcb.snd_wscale)
        and seq_diff(tcb.ts_recent, ts_val) <= tcb.rtt.rto * 1024  # Linux: (icsk_rto * 1024) / HZ
    )


def may_update_window(tcb: TCB, ack: int, seq: int, window: int) -> bool:
    """Whether the segment may update the send window (Linux tcp_may_update_window)."""
    return seq_gt(ack, tcb.snd_una) or seq_gt(seq, tcb.snd_wl1) or (
        seq == tcb.snd_wl1 and (window > tcb.snd_wnd or not window))


def acceptable(tcb: TCB, seg: TcpSegment) -> bool:
    """RFC 9293's four-case acceptability test against the window we advertised."""
    window = max(seq_diff(tcb.rcv_adv, tcb.rcv_nxt), 0)
    length = seg.seg_len
    offset = seq_diff(seg.seq, tcb.rcv_nxt)
    if length == 0:
        return offset == 0 if window == 0 else 0 <= offset < window
    if window == 0:
        # Linux lets a bare FIN through a closed window (tcp_sequence allows a FIN one past
        # it, tcp_data_queue takes it): a peer sending FINs into it would loop otherwise.
        return offset == 0 and length == 1 and bool(seg.flags & FIN) and not seg.payload
    last = offset + length - 1
    return 0 <= offset < window or 0 <= last < window


def process_ack(stack: Stack, tcb: TCB, seg: TcpSegment, now: float) -> None:
    newly_sacked, sacked_sent = 0, None
    prior_fack = recovery.fack(tcb)
    if tcb.sack_ok and seg.options.sack_blocks:
        newly_sacked, sacked_sent = recovery.apply_sack(stack, tcb, seg.options.sack_blocks, now, prior_fack)
    window = seg.window << tcb.snd_wscale
    if tcb.ecn_ok and seg.flags & ECE:
        recovery.enter_cwr(tcb)  # the peer saw congestion: reduce as for a loss (RFC 3168 6.1.2)
    if tcb.tlp_high_seq is not None:
        blocks = seg.options.sack_blocks
        # RFC 2883: a first block below the cumulative ACK reports a duplicate.
        dsack_end = blocks[0][1] if blocks and seq_le(blocks[0][1], seg.ack) else None
        pure_dupack = (seg.ack == tcb.snd_una and not seg.payload and not newly_sacked
                       and window == tcb.snd_wnd)
        recovery.process_tlp_ack(stack, tcb, seg.ack, dsack_end, pure_dupack)
    if seq_gt(seg.ack, tcb.snd_una):
        acknowledge(stack, tcb, seg, now, newly_sacked, prior_fack, sacked_sent)
    else:
        if sacked_sent is not None:
            tcb.rtt.sample(now - sacked_sent)  # an RTT from SACKed data alone (Linux tcp_ack_update_rtt)
            tcb.backoff = 0
        if tcb.rtx and not seg.payload and not seg.flags & (SYN | FIN) and window == tcb.snd_wnd:
            stack.counters.tcp["DupAcks"] += 1
            recovery.on_duplicate_ack(stack, tcb, newly_sacked)
        elif newly_sacked:
            recovery.on_duplicate_ack(stack, tcb, newly_sacked)
    if seq_lt(tcb.snd_wl1, seg.seq) or (tcb.snd_wl1 == seg.seq and seq_le(tcb.snd_wl2, seg.ack)):
        tcb.snd_wnd = window
        tcb.snd_wl1 = seg.seq
        tcb.snd_wl2 = seg.ack
        tcb.max_snd_wnd = max(tcb.max_snd_wnd, window)
        if window:
            tcb.persist_at = float("inf")
            tcb.persist_backoff = 0


def acknowledge(stack: Stack, tcb: TCB, seg: TcpSegment, now: float, newly_sacked: int, prior_fack: int,
                sacked_sent: float | None = None) -> None:
    """New data acknowledged: retire segments, sample RTT, free buffer space (``sacked_sent``: when
    the earliest segment this ACK newly SACKed was sent, the sample if none acked gives one)."""
    ack = seg.ack
    acked_segments = 0
    rtt_sample = None
    retransmitted_acked = False
    reord = prior_fack  # the lowest segment delivered late, never retransmitted nor SACKed
    frto = tcb.frto
    while tcb.rtx and seq_le(tcb.rtx[0].end, ack):
        sent = tcb.retire_head()
        acked_segments += not sent.sacked  # newly delivered (a SACKed one was counted then)
        recovery.rack_advance(tcb, sent, now)
        if sent.retransmits == 0:
            rtt_sample = now - sent.sent_at
            if not sent.sacked and seq_lt(sent.seq, reord):
                reord = sent.seq
            if frto and not sent.sacked and seq_le(sent.end, tcb.recover):
                tcb.frto_delivered = True
        else:
            retransmitted_acked = True
    if tcb.sack_ok:
        recovery.check_reordering(stack, tcb, reord, prior_fack)
    # The algorithm's sample: the newest segment ACKed, if none was retransmitted (Linux ca_rtt_us).
    ca_rtt = None if retransmitted_acked else rtt_sample
    if tcb.rtx and seq_lt(tcb.rtx[0].seq, ack):
        tcb.rtx[0].seq = ack  # part of a segment acknowledged
    if rtt_sample is None and sacked_sent is not None:
        rtt_sample = now - sacked_sent
    if tcb.ts_ok and seg.options.ts_ecr:
        rtt_sample = max(seq_diff(ts_now(stack, tcb), seg.options.ts_ecr), 0) / 1000
    if rtt_sample is not None:
        tcb.rtt.sample(rtt_sample)
        tcb.backoff = 0  # RFC 6298 5.7 / Karn: the backed-off RTO stays until a valid sample (as Linux)
    acked_data = min(max(seq_diff(ack, tcb.snd_buf_seq), 0), len(tcb.send_buffer))
    if acked_data:
        del tcb.send_buffer[:acked_data]
        tcb.snd_buf_seq = seq_add(tcb.snd_buf_seq, acked_data)
        ends = tcb.skb_ends
        while ends and seq_le(ends[0], tcb.snd_buf_seq):
            ends.popleft()  # a whole skb acknowledged is freed; a part of one, trimmed (tcp_trim_head)
            tcb.skbs_sent = max(tcb.skbs_sent - 1, 0)
    tcb.bytes_acked += seq_diff(ack, tcb.snd_una)
    tcb.snd_una = ack
    if tcb.mtup_probe_size:
        mtu.acked(stack, tcb)
    while tcb.tx_stamps and seq_lt(tcb.tx_stamps[0][0], ack):
        key, flags, packet = tcb.tx_stamps.popleft()
        if flags & SOF_TIMESTAMPING_TX_ACK:
            tcb.sock.tx_timestamp(now, SCM_TSTAMP_ACK, key, packet or b"")  # Linux tcp_ack_tstamp
    while tcb.zerocopy_sends and seq_le(tcb.zerocopy_sends[0][0], ack):
        _, first, last = tcb.zerocopy_sends.popleft()
        tcb.sock.zerocopy_completed(first, last)  # MSG_ZEROCOPY: its data is acknowledged
        stack.wake(tcb.sock)
    tcb.retransmits = 0
    tcb.persist_backoff = 0
    tcb.first_retransmit_at = None
    if ca_rtt is not None:
        tcb.ca.acked(tcb, int(ca_rtt * 1_000_000), now)
    tcb.reo_pending = False  # RACK arms it again if it must (Linux: else the RTO replaces it)
    recovery.on_new_ack(stack, tcb, acked_segments, newly_sacked)
    if not tcb.reo_pending:
        arm_rto(stack, tcb, now)
        schedule_loss_probe(stack, tcb, now, True)


def urgent_arrives(tcb: TCB, seg: TcpSegment) -> None:
    """Note a new urgent pointer, and the urgent byte once it is here (Linux tcp_urg,
    tcp_check_urg; the pointer points just past the byte, as BSD and Linux read RFC 793)."""
    if seg.flags & URG and seg.urgent:
        ptr = seq_add(seg.seq, seg.urgent - 1)
        new = not seq_lt(ptr, tcb.rcv_nxt) and not seq_gt(copied_seq(tcb), ptr)
        if new and not (tcb.urg_data and not seq_gt(ptr, tcb.urg_seq)):
            tcb.urg_seq, tcb.urg_data = ptr, URG_NOTYET
    if tcb.urg_data == URG_NOTYET:
        offset = seq_diff(tcb.urg_seq, seg.seq)
        if 0 <= offset < len(seg.payload):
            tcb.urg_data = URG_VALID | seg.payload[offset]


def copied_seq(tcb: TCB) -> int:
    """The sequence number of the next byte the application reads (Linux copied_seq)."""
    return seq_add(tcb.rcv_nxt, -(len(tcb.recv_buffer) + tcb.fin_received))


def receive_data(stack: Stack, tcb: TCB, seq: int, data: bytes, fin: int) -> None:
    """Queue in-window data (in order, or out of order with SACK), then a FIN if it came."""
    counters = stack.counters
    start = seq_diff(tcb.rcv_nxt, seq)
    if start > 0:
        if tcb.sack_ok:
            tcb.dsack = (seq, tcb.rcv_nxt)  # the part we had already (RFC 2883)
        data = data[start:]
        seq = tcb.rcv_nxt
    room = seq_diff(tcb.rcv_adv, seq)
    if len(data) > room:
        # Linux tcp_sequence: data running past the window is taken whole while nothing waits
        # to be read (the application will make room), else dropped whole, with an ACK.
        if tcb.recv_buffer or room <= 0:
            counters.tcp["BeyondWindow"] += 1
            counters.drop("tcp", "beyond_window")
            tcb.ack_now = True
            return
    if not data:
        if fin:
            fin_arrived(stack, tcb, seq)  # a FIN right after data we had already
        else:
            tcb.ack_now = True
        return
    fin_seq = seq_add(seq, len(data))
    if seq != tcb.rcv_nxt:
        counters.tcp["OFOQueue"] += 1
        tcb.ack_now = True
        if tcb.sack_ok:
            held = tcb.out_of_order.first_overlap(seq, fin_seq)
            if held is not None:
                tcb.dsack = held  # the part held already, all or some (RFC 2883; Linux tcp_data_queue_ofo)
        if not ofo_room(stack, tcb, seq, len(data)):
            counters.tcp["OFODrop"] += 1
            counters.drop("tcp", "ofo_memory")
            return
        insert_out_of_order(tcb, seq, data)
        if fin:
            tcb.ooo_fin = fin_seq
        return
    had_holes = bool(tcb.out_of_order)
    tcb.recv_buffer += data
    tcb.rcv_nxt = fin_seq
    if had_holes:
        if tcb.sack_ok:
            held = tcb.out_of_order.first_overlap(seq, fin_seq)
            if held is not None:
                dsack_extend(tcb, *held)  # in-order data reached queued bytes (Linux tcp_ofo_queue)
        merge_in_order(tcb)
    stack.wake(tcb.sock)
    if fin:
        fin_arrived(stack, tcb, fin_seq)
    elif tcb.ooo_fin is not None and tcb.ooo_fin == tcb.rcv_nxt:
        fin_arrived(stack, tcb, tcb.ooo_fin)
    # The ACK policy once a FIN (which may end quick-ACK mode) has been taken into account.
    if had_holes or len(data) < tcb.mss and tcb.quickacks:
        tcb.ack_now = True  # a hole was filled (RFC 5681 4.2), or quick-ACK mode
    else:
        schedule_ack(stack, tcb, len(data))


def dsack_extend(tcb: TCB, start: int, end: int) -> None:
    """Report [start, end) as a duplicate, grown into the one already noted if they touch
    (Linux tcp_dsack_extend: one D-SACK block per ACK)."""
    noted = tcb.dsack
    if noted is None:
        tcb.dsack = (start, end)
    elif seq_le(start, noted[1]) and seq_le(noted[0], end):
        tcb.dsack = (start if seq_lt(start, noted[0]) else noted[0], end if seq_gt(end, noted[1]) else noted[1])


def ofo_room(stack: Stack, tcb: TCB, seq: int, length: int) -> bool:
    """Room in the receive buffer for ``length`` bytes out of order, counted as Linux counts skb
    truesize; if there is none, prune the queue from its highest sequence down
    (tcp_try_rmem_schedule, tcp_prune_ofo_queue). False: drop the arriving data.

    A FIN that came out of order stays noted through a prune: it is where the peer's
    stream ends, taken once the retransmitted data reaches it."""
    rcvbuf = tcb.sock.rcvbuf
    limit = rcvbuf - len(tcb.recv_buffer) - length - SKB_OVERHEAD
    queue = tcb.out_of_order
    if queue.truesize <= limit:
        return True
    stack.counters.tcp["PruneCalled"] += 1
    if queue.prune(seq, rcvbuf >> 3, limit):
        stack.counters.tcp["OfoPruned"] += 1
        tcb.sack_recent = []  # Linux tcp_sack_reset: the SACK state starts again
    return queue.truesize <= limit


def insert_out_of_order(tcb: TCB, seq: int, data: bytes) -> None:
    """Queue data beyond rcv_nxt (coalesced with what it touches) and note it for SACK."""
    start, end = tcb.out_of_order.insert(seq, data, tcb.rcv_nxt)
    # SACK blocks are reported most recently changed first (RFC 2018 4, Linux's MRU order).
    recent = [seq] + [p for p in tcb.sack_recent if not (seq_ge(p, start) and seq_lt(p, end))]
    del recent[MAX_SACK_RECENT:]
    tcb.sack_recent = recent


def merge_in_order(tcb: TCB) -> None:
    """Move the queued data that rcv_nxt has reached to the receive buffer."""
    for seq, data in tcb.out_of_order.take_up_to(tcb.rcv_nxt):
        offset = seq_diff(tcb.rcv_nxt, seq)
        if offset < len(data):
            tcb.recv_buffer += data[offset:]
            tcb.rcv_nxt = seq_add(seq, len(data))


def fin_arrived(stack: Stack, tcb: TCB, fin_seq: int) -> None:
    if fin_seq != tcb.rcv_nxt:
        tcb.ooo_fin = fin_seq
        tcb.ack_now = True
        return
    if tcb.fin_received:
        tcb.ack_now = True
        return
    tcb.ooo_fin = None
    tcb.rcv_nxt = seq_add(tcb.rcv_nxt, 1)
    tcb.fin_received = True
    # Linux tcp_fin: nothing can follow a FIN, so the out-of-order queue and the SACK state,
    # a pending D-SACK included, are dropped (tcp_sack_reset).
    tcb.out_of_order.clear()
    tcb.sack_recent = []
    tcb.dsack = None
    if tcb.state in (ESTABLISHED, SYN_RECEIVED):
        tcb.state = CLOSE_WAIT
        if seq_diff(tcb.rcv_nxt, tcb.irs) - tcb.syn_data_received > 2:
            # Linux tcp_fin enters ping-pong mode: once data has flowed in (data in a Fast Open
            # SYN does not count: it leaves Linux's ato at 0), the FIN's ACK waits for the
            # delayed-ACK timer (our own FIN may ride on it).
            tcb.quickacks = 0
            schedule_ack(stack, tcb, 0)
        else:
            tcb.ack_now = True  # nothing received before: acknowledged at once (Linux)
    elif tcb.state == FIN_WAIT_1:
        tcb.state = CLOSING
        tcb.ack_now = True
    elif tcb.state == FIN_WAIT_2:
        tcb.ack_now = True
        enter_time_wait(stack, tcb)
    else:
        tcb.ack_now = True
    stack.wake(tcb.sock)


def enter_time_wait(stack: Stack, tcb: TCB) -> None:
    inf = float("inf")
    tcb.state = TIME_WAIT
    tcb.rto_at = tcb.persist_at = tcb.keepalive_at = tcb.fin_wait2_at = inf
    tcb.clear_queue()
    tcb.timewait_at = stack.clock.now() + 2 * stack.tcp.config.msl
    stack.tcp.timer_changed(tcb)
    stack.wake(tcb.sock)


def reset_received(stack: Stack, tcb: TCB) -> None:
    stack.counters.tcp["EstabResets" if tcb.state in (ESTABLISHED, CLOSE_WAIT) else "InRsts"] += 1
    if tcb.state == SYN_RECEIVED and tcb.parent is not None and not tcb.fastopen_passive:
        stack.tcp.done(tcb)  # a passive half-open connection just goes away
    elif tcb.state in (CLOSING, LAST_ACK, TIME_WAIT):
        stack.tcp.done(tcb)
    else:
        stack.tcp.abort(tcb, errno.EPIPE if tcb.state == CLOSE_WAIT else errno.ECONNRESET)


def oow_rate_limited(stack: Stack, tcb: TCB, counter: str) -> bool:
    """At most one challenge or out-of-window ACK per socket per tcp_invalid_ratelimit
    (Linux __tcp_oow_rate_limited): two stacks cannot ACK each other in a loop, nor can a
    forger make one answer at the rate it sends."""
    now = stack.clock.now()
    last = tcb.last_oow_ack_at
    if last is not None and 0 <= now - last < stack.tcp.config.invalid_ratelimit:
        stack.counters.tcp[counter] += 1
        return True
    tcb.last_oow_ack_at = now
    return False


def challenge_ack(stack: Stack, tcb: TCB) -> None:
    """RFC 5961 challenge ACK, rate-limited per socket, then stack-wide (Linux tcp_send_challenge_ack)."""
    if oow_rate_limited(stack, tcb, "TCPACKSkippedChallenge"):
        return
    if stack.tcp.challenge_allowed():
        stack.counters.tcp["ChallengeACK"] += 1
        send_ack(stack, tcb)
    else:
        stack.counters.tcp["ChallengeACKLimited"] += 1


def tcp_error(stack: Stack, inner: IPv4Packet, error: int, hard: bool) -> None:
    """An ICMP error about a segment we sent (RFC 5927 / Linux tcp_v4_err)."""
    sport = int.from_bytes(inner.payload[0:2], "big")
    dport = int.from_bytes(inner.payload[2:4], "big")
    tcb = stack.tcp.conns.get((inner.src, sport, inner.dst, dport))
    if tcb is None:
        stack.counters.drop("icmp", "error_no_socket")
        return
    seq = int.from_bytes(inner.payload[4:8], "big")
    if not (seq_le(tcb.snd_una, seq) and seq_lt(seq, tcb.snd_nxt) or tcb.state == SYN_SENT):
        stack.counters.drop("icmp", "error_out_of_window")
        return
    if error == errno.EMSGSIZE:
        stack.tcp.update_mss(tcb)
        # Linux tcp_simple_retransmit: segments now too big are lost; they go again, cut to size.
        for sent in tcb.rtx:
            data_length = sent.length - (1 if sent.flags & SYN else 0) - (1 if sent.flags & FIN else 0)
            if not sent.sacked and data_length > tcb.mss:
                tcb.mark_lost(sent)
                tcb.mark_retransmitted(sent, False)
        tcp_output(stack, tcb)
        return
    if tcb.state == SYN_SENT or (tcb.state == SYN_RECEIVED and hard):
        stack.tcp.abort(tcb, error)  # Linux tcp_v4_err: any error ends a connection attempt
    else:
        tcb.soft_error = error  # reported only if the connection later times out (Linux)
