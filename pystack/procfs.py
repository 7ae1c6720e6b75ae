"""Linux's /proc/net/tcp, of pystack's sockets: what tools and test scripts read
(``grep " 0A " /proc/net/tcp``, netstat, ss) works on pystack too.

The format is tcp4_seq_show's (net/ipv4/tcp_ipv4.c): one line per listener,
then per connection (embryonic ones as get_openreq4 prints them, TIME-WAIT as
get_timewait4_sock), each padded to 149 characters. Addresses are the network
-order words printed as host (little-endian) integers, ports in host order;
times are in clock ticks (USER_HZ, 100 a second). pystack has no users,
inodes or kernel pointers: uid, inode and the pointer read 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .socket import SIOCOUTQ
from .tcp.api import tcp_ioctl
from .tcp.seq import seq_diff
from .tcp.tcb import LINUX_STATES, LISTEN, SYN_RECEIVED, TCB, TIME_WAIT

if TYPE_CHECKING:
    from .stack import Stack

TMPSZ = 150  # each line, newline included
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
USER_HZ = 100
INITIAL_SSTHRESH = 0x7FFFFFFF  # Linux TCP_INFINITE_SSTHRESH: still in the initial slow start


def proc_net_tcp(stack: Stack) -> str:
    listeners = [tcb for port in sorted(stack.tcp.listeners) for tcb in stack.tcp.listeners[port]]
    tcbs = listeners + [tcb for tcb in stack.tcp.conns.values() if tcb.state != LISTEN]
    now, ato = stack.clock.now(), stack.tcp.config.delack_min
    lines = [HEADER] + [f"{i:4d}: {_entry(tcb, now, ato)}" for i, tcb in enumerate(tcbs)]
    return "".join(line.ljust(TMPSZ - 1) + "\n" for line in lines)


def proc_net_tcp6() -> str:
    """pystack has no IPv6: the header alone (tcp6_seq_show's)."""
    return ("  sl  local_address                         remote_address                        st tx_queue "
            "rx_queue tr tm->when retrnsmt   uid  timeout inode\n")


def _endpoints(tcb: TCB) -> str:
    return (f"{_address(tcb.local_addr)}:{tcb.local_port:04X} "
            f"{_address(tcb.remote_addr)}:{tcb.remote_port:04X} {LINUX_STATES[tcb.state]:02X}")


def _address(addr: int) -> str:
    return f"{int.from_bytes(addr.to_bytes(4, 'big'), 'little'):08X}"


def _ticks(seconds: float) -> int:
    return max(math.ceil(seconds * USER_HZ), 0)


def _entry(tcb: TCB, now: float, ato: float) -> str:
    if tcb.state == TIME_WAIT:
        when = _ticks(tcb.timewait_at - now)
        return f"{_endpoints(tcb)} 00000000:00000000 03:{when:08X} 00000000     0        0 0 1 0000000000000000"
    if tcb.state == SYN_RECEIVED and tcb.parent is not None:
        when = _ticks(tcb.rto_at - now)
        return (f"{_endpoints(tcb)} 00000000:00000000 01:{when:08X} {tcb.retransmits:08X}     0        0 0 0 "
                "0000000000000000")
    if tcb.state == LISTEN:
        tx_queue, rx_queue = 0, len(tcb.accept_queue)  # rx: the accept queue (sk_ack_backlog)
    else:
        tx_queue = tcp_ioctl(tcb.sock, SIOCOUTQ)
        rx_queue = len(tcb.recv_buffer)
    if seq_diff(tcb.rcv_nxt, tcb.irs) <= 1:
        ato = 0  # Linux sets the delayed-ACK timeout at the first data received
    timer, expires = 0, now
    if tcb.rto_at != math.inf:
        timer, expires = 1, tcb.rto_at  # retransmission, RACK reordering or loss probe
    elif tcb.persist_at != math.inf:
        timer, expires = 4, tcb.persist_at
    elif tcb.keepalive_at != math.inf:
        timer, expires = 2, tcb.keepalive_at
    ssthresh = 0 if tcb.state == LISTEN else -1 if tcb.ssthresh >= INITIAL_SSTHRESH else tcb.ssthresh
    return (f"{_endpoints(tcb)} {tx_queue:08X}:{rx_queue:08X} {timer:02X}:{_ticks(expires - now):08X} "
            f"{tcb.retransmits:08X}     0 {tcb.keepalive_probes_out:8d} 0 1 0000000000000000 "
            f"{_ticks(tcb.rtt.backed_off(tcb.backoff))} {_ticks(ato)} {tcb.quickacks << 1} {tcb.cwnd} {ssthresh}")
