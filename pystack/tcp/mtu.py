"""Packetization-layer path MTU discovery (RFC 4821), as Linux's tcp_mtu_probing does it.

With ``tcp_mtu_probing`` 2 every connection searches for its path MTU
between ``search_low`` (from ``tcp_base_mss``) and ``search_high`` (the
peer's MSS, capped by the route's MTU): while the search interval is at
least ``tcp_probe_threshold`` bytes, one segment of the middle size is
sent (tcp_mtu_probe) when there is enough data and window behind it.
Acknowledged, the probe's size becomes the new floor, which lifts the
MSS (tcp_mtup_probe_success); lost, it becomes the ceiling less one
(tcp_mtup_probe_failed). ``tcp_probe_interval`` seconds after a search
ends, a new one starts (tcp_mtu_check_reprobe). While probing is on,
the MSS is at most the floor's (tcp_sync_mss).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire.ipv4 import HEADER_LEN as IP_HEADER_LEN
from ..wire.tcp import HEADER_LEN as TCP_HEADER_LEN
from .seq import seq_add, seq_diff, seq_gt, seq_le
from .tcb import CA_CWR, CA_OPEN, CA_RECOVERY, TCB

if TYPE_CHECKING:
    from ..stack import Stack

HEADERS = IP_HEADER_LEN + TCP_HEADER_LEN
TIMESTAMP_OPTION_LEN = 12
PROBE_MIN_CWND = 11  # Linux: a probe needs this many segments of cwnd


def mss_clamp(tcb: TCB) -> int:
    """The largest MSS the connection may use: the peer's, and TCP_MAXSEG's (Linux mss_clamp)."""
    return min(tcb.peer_mss, tcb.user_mss) if tcb.user_mss else tcb.peer_mss


def mtu_to_mss(tcb: TCB, mtu: int) -> int:
    """Payload bytes of a segment in a ``mtu``-byte packet (Linux tcp_mtu_to_mss)."""
    mss = max(min(mtu - HEADERS, mss_clamp(tcb)), 48)
    return mss - (TIMESTAMP_OPTION_LEN if tcb.ts_ok else 0)


def mss_to_mtu(tcb: TCB, mss: int) -> int:
    return mss + (TIMESTAMP_OPTION_LEN if tcb.ts_ok else 0) + HEADERS


def mtup_init(stack: Stack, tcb: TCB) -> None:
    """Start the search (Linux tcp_mtup_init: at connect, and once the connection is established)."""
    cfg = stack.tcp.config
    tcb.mtup_enabled = cfg.mtu_probing > 1
    tcb.mtup_search_high = mss_clamp(tcb) + HEADERS
    tcb.mtup_search_low = mss_to_mtu(tcb, cfg.base_mss)
    tcb.mtup_probe_size = 0
    tcb.mtup_probe_at = stack.clock.now()


def probe(stack: Stack, tcb: TCB, mss: int, in_flight: int) -> int | None:
    """Send a probe if it is time to (Linux tcp_mtu_probe): its size; 0 if new data must wait
    (the probe is due but the window or cwnd must drain first); None: send as usual."""
    if (not tcb.mtup_enabled or tcb.mtup_probe_size or tcb.ca_state != CA_OPEN or tcb.cwnd < PROBE_MIN_CWND
            or (tcb.sack_ok and tcb.out_of_order) or tcb.dsack is not None):
        return None
    low, high = tcb.mtup_search_low, tcb.mtup_search_high
    size = mtu_to_mss(tcb, (high + low) >> 1)
    needed = size + (tcb.reordering + 1) * tcb.mss
    if size > mtu_to_mss(tcb, high) or high - low < stack.tcp.config.probe_threshold:
        check_reprobe(stack, tcb, mss)
        return None
    unsent = seq_diff(seq_add(tcb.snd_buf_seq, len(tcb.send_buffer)), tcb.snd_nxt)
    if unsent < needed or tcb.snd_wnd < needed:
        return None
    if seq_gt(seq_add(tcb.snd_nxt, needed), seq_add(tcb.snd_una, tcb.snd_wnd)):
        return 0
    if in_flight + 2 > tcb.cwnd:
        return 0 if in_flight else None
    if tcb.fin_queued or tcb.eor_ends:  # Linux tcp_can_coalesce_send_queue_head: no FIN, no record end
        return None
    tcb.cwnd -= 1  # the probe stands for two segments (Linux)
    tcb.mtup_probe_size = mss_to_mtu(tcb, size)
    tcb.mtup_probe_start = tcb.snd_nxt
    tcb.mtup_probe_end = seq_add(tcb.snd_nxt, size)
    return size


def check_reprobe(stack: Stack, tcb: TCB, mss: int) -> None:
    """The search ended: a new one, from the current MSS up, after tcp_probe_interval."""
    now = stack.clock.now()
    if now - tcb.mtup_probe_at >= stack.tcp.config.probe_interval:
        tcb.mtup_probe_size = 0
        tcb.mtup_search_high = mss_clamp(tcb) + HEADERS
        tcb.mtup_search_low = mss_to_mtu(tcb, mss)
        tcb.mtup_probe_at = now


def acked(stack: Stack, tcb: TCB) -> None:
    """The probe arrived (Linux tcp_mtup_probe_success): cwnd keeps its bytes in the larger
    segments, ssthresh follows, and the probe's size is the new floor (and MSS)."""
    if not tcb.mtup_probe_size or not seq_le(tcb.mtup_probe_end, tcb.snd_una):
        return
    tcb.cwnd = max(1, tcb.cwnd * mss_to_mtu(tcb, tcb.mss) // tcb.mtup_probe_size)
    tcb.cwnd_count = 0
    if tcb.ca_state not in (CA_CWR, CA_RECOVERY):  # tcp_current_ssthresh
        tcb.ssthresh = max(tcb.ssthresh, (tcb.cwnd >> 1) + (tcb.cwnd >> 2))
    tcb.mtup_search_low = tcb.mtup_probe_size
    tcb.mtup_probe_size = 0
    tcb.mtup_probe_at = stack.clock.now()
    stack.counters.tcp["TCPMTUPSuccess"] += 1
    stack.tcp.update_mss(tcb)


def lost(stack: Stack, tcb: TCB) -> bool:
    """Loss detected with the probe the first segment unacknowledged (Linux tcp_fastretrans_alert):
    the path does not carry it (tcp_mtup_probe_failed). cwnd gets back what the probe took, and
    the probe is resent in segments of the MSS. True if so (then no recovery: the units changed,
    not the congestion)."""
    if not tcb.mtup_probe_size or tcb.snd_una != tcb.mtup_probe_start:
        return False
    tcb.mtup_search_high = tcb.mtup_probe_size - 1
    tcb.mtup_probe_size = 0
    tcb.mtup_probe_at = stack.clock.now()
    tcb.cwnd += 1
    stack.counters.tcp["TCPMTUPFail"] += 1
    return True
