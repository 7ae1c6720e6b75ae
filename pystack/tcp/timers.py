"""TCP timers: retransmission, delayed ACK, persist, keepalive, FIN-WAIT-2 and TIME-WAIT."""

from __future__ import annotations

import errno
import math
from typing import TYPE_CHECKING

from . import recovery
from .output import (
    arm_rto,
    retransmit,
    send_ack,
    send_mss,
    send_new_data,
    send_probe,
    send_window_probe,
    tcp_output,
)
from .tcb import SYN_RECEIVED, SYN_SENT, SYNCHRONIZED, TCB, TIME_WAIT

if TYPE_CHECKING:
    from ..stack import Stack


def tcp_timers(stack: Stack, tcb: TCB, now: float) -> None:
    """Run whatever of this connection's timers is due."""
    if now >= tcb.timewait_at or now >= tcb.fin_wait2_at:
        stack.tcp.done(tcb)
        return
    if now >= tcb.rto_at and not retransmission_timeout(stack, tcb, now):
        return
    if now >= tcb.delack_at:
        tcb.delack_at = math.inf
        send_ack(stack, tcb)
    if now >= tcb.persist_at:
        tcb.persist_at = math.inf
        tcb.persist_backoff += 1
        if not send_window_probe(stack, tcb, now) and not tcb.rtx:
            tcb.persist_at = now + tcb.rtt.backed_off(tcb.persist_backoff)
    if now >= tcb.keepalive_at and not keepalive_timeout(stack, tcb, now):
        return
    tcp_output(stack, tcb)


def retransmission_timeout(stack: Stack, tcb: TCB, now: float) -> bool:
    """Retransmit the oldest segment with backoff; False if the connection was given up."""
    counters, cfg = stack.counters, stack.tcp.config
    tcb.rto_at = math.inf
    if not tcb.rtx:
        return True
    if tcb.probe_pending:
        send_loss_probe(stack, tcb, now)
        return True
    if tcb.reo_pending:
        recovery.rack_reo_timeout(stack, tcb, now)
        arm_rto(stack, tcb, now)
        return True
    tcb.tlp_high_seq = None
    if tcb.state == SYN_SENT:
        limit = tcb.syn_retries or cfg.syn_retries
    elif tcb.state == SYN_RECEIVED:
        limit = cfg.synack_retries
    else:
        limit = cfg.retries2
    timed_out = tcb.retransmits >= limit
    if tcb.user_timeout and tcb.state not in (SYN_SENT, SYN_RECEIVED):
        # Linux retransmits_timed_out: only once something was retransmitted, counted from then.
        start = tcb.first_retransmit_at
        timed_out = start is not None and now - start >= tcb.user_timeout - 1e-9
    if timed_out:
        counters.tcp["AbortOnTimeout"] += 1
        if tcb.state == SYN_RECEIVED and tcb.parent is not None:
            stack.tcp.done(tcb)
        else:
            stack.tcp.abort(tcb, tcb.soft_error or errno.ETIMEDOUT)
        return False
    counters.tcp["Timeouts"] += 1
    if tcb.state not in (SYN_SENT, SYN_RECEIVED):
        recovery.on_timeout(stack, tcb)
    tcb.want_ecn = False  # a SYN sent again asks for no ECN: a path may drop ECN-setup SYNs (Linux)
    tcb.backoff += 1
    tcb.retransmits += 1
    if tcb.first_retransmit_at is None:
        tcb.first_retransmit_at = now
    head = tcb.rtx[0]
    retransmit(stack, tcb, head, now)
    arm_rto(stack, tcb, now)
    return True


def send_loss_probe(stack: Stack, tcb: TCB, now: float) -> None:
    """The probe timer fired (RFC 8985 7.3; Linux tcp_send_loss_probe): one new segment if the
    window allows, else the last segment again, to draw a SACK that reveals a tail loss; then
    the RTO. One probe at a time."""
    tcb.probe_pending = False
    if tcb.tlp_high_seq is None:
        before = tcb.snd_nxt
        tcb.nagle_push = True  # the probe goes whatever Nagle or cork would hold
        send_new_data(stack, tcb, now, tcb.cwnd - 1, send_mss(tcb))
        tcb.nagle_push = False
        tcb.tlp_retrans = tcb.snd_nxt == before
        if tcb.tlp_retrans:
            retransmit(stack, tcb, tcb.rtx[-1], now, probe=True)
        tcb.tlp_high_seq = tcb.snd_nxt
        stack.counters.tcp["TCPLossProbes"] += 1
    arm_rto(stack, tcb, now)


def keepalive_timeout(stack: Stack, tcb: TCB, now: float) -> bool:
    """Probe an idle connection; give up after the configured count (ETIMEDOUT, with a RST)."""
    cfg = stack.tcp.config
    idle = tcb.keepidle or cfg.keepalive_time
    interval = tcb.keepintvl or cfg.keepalive_intvl
    probes = tcb.keepcnt or cfg.keepalive_probes
    tcb.keepalive_at = math.inf
    if not tcb.keepalive or tcb.state not in SYNCHRONIZED or tcb.state == TIME_WAIT:
        return True  # Linux probes in every synchronized state (TIME-WAIT has no timer of its own)
    if tcb.rtx:  # data outstanding: the retransmission timer watches the peer
        tcb.keepalive_at = now + interval
        return True
    if now - tcb.last_received_at < idle:
        tcb.keepalive_at = tcb.last_received_at + idle
        return True
    if tcb.user_timeout:  # Linux: TCP_USER_TIMEOUT replaces the probe count once a probe is out
        give_up = tcb.keepalive_probes_out > 0 and now - tcb.last_received_at >= tcb.user_timeout
    else:
        give_up = tcb.keepalive_probes_out >= probes
    if give_up:
        stack.counters.tcp["KeepAliveTimeouts"] += 1
        stack.tcp.abort(tcb, tcb.soft_error or errno.ETIMEDOUT, send_reset=True)
        return False
    tcb.keepalive_probes_out += 1
    stack.counters.tcp["KeepAliveProbes"] += 1
    send_probe(stack, tcb)
    tcb.keepalive_at = now + interval
    return True
