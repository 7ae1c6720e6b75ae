"""Congestion control and loss recovery, counted in segments as Linux does.

The window's growth and decrease are the connection's algorithm's
(congestion.py: CUBIC or Reno); here: fast retransmit and
recovery with NewReno partial ACKs (RFC 6582) or SACK-based loss
detection (RFC 6675), cwnd reduction by proportional rate reduction
(RFC 6937, Linux's choice), limited transmit (RFC 3042) falling out of
the in-flight count, and the retransmission timeout's loss state.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from . import mtu
from .rtt import TCP_TIMEOUT_MIN
from .seq import seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from .tcb import CA_CWR, CA_DISORDER, CA_LOSS, CA_OPEN, CA_RECOVERY, TCB, Sent

if TYPE_CHECKING:
    from ..stack import Stack



def on_new_ack(stack: Stack, tcb: TCB, acked_segments: int, newly_sacked: int) -> None:
    """Data was cumulatively acknowledged: grow cwnd, or progress/finish recovery."""
    if tcb.frto:
        frto_ack(stack, tcb, True, newly_sacked > 0)
    lost_before = tcb.lost_out
    if not tcb.sack_ok and acked_segments:
        # One segment filled the hole; the others had each earned a duplicate ACK, and were
        # counted delivered then: only the rest are delivered now (Linux tcp_remove_reno_sacks).
        delivered = max(acked_segments - tcb.dupacks, 1)
        tcb.dupacks = max(tcb.dupacks - (acked_segments - 1), 0)
        acked_segments = delivered
    if tcb.ca_state <= CA_DISORDER:
        tcb.dupacks = 0
        tcb.ca.cong_avoid(tcb, acked_segments + newly_sacked, stack.clock.now())
    elif state_holds(tcb):
        pass
    elif seq_ge(tcb.snd_una, tcb.recover):
        was_loss = tcb.ca_state == CA_LOSS
        finish_recovery(stack, tcb)
        if was_loss:  # the ACK that ends the Loss state grows cwnd too (Linux: cong_control after)
            tcb.ca.cong_avoid(tcb, acked_segments + newly_sacked, stack.clock.now())
    if tcb.ca_state <= CA_DISORDER:
        # Any ACK, not only a duplicate, may leave DupThresh SACKed segments above a hole
        # (RFC 6675 IsLost; Linux re-checks on every dubious ACK, also as recovery ends).
        if tcb.sack_ok and loss_suspected(stack, tcb):
            enter_recovery(stack, tcb)
            prr_update(tcb, max(acked_segments + newly_sacked, 1), False)
        else:
            keep_open(tcb)
        return
    if tcb.ca_state == CA_CWR:
        if tcb.sack_ok and loss_suspected(stack, tcb):
            enter_recovery(stack, tcb)
        prr_update(tcb, acked_segments + newly_sacked, tcb.lost_out <= lost_before)
        return
    if tcb.ca_state == CA_RECOVERY:
        if not tcb.sack_ok:
            mark_head_lost(tcb)  # NewReno partial ACK: the next hole is lost too
        elif uses_rack(stack, tcb):
            rack_mark_lost(stack, tcb)
        else:
            mark_lost_by_sack(stack, tcb)  # the scoreboard is re-read on every ACK in recovery
        prr_update(tcb, acked_segments + newly_sacked, tcb.lost_out <= lost_before)
    elif tcb.ca_state == CA_LOSS:
        tcb.ca.cong_avoid(tcb, acked_segments + newly_sacked, stack.clock.now())


def on_duplicate_ack(stack: Stack, tcb: TCB, newly_sacked: int) -> None:
    """A duplicate ACK (or one that only SACKs): count it, enter recovery at the threshold."""
    if tcb.frto:
        frto_ack(stack, tcb, False, True)
    if not tcb.sack_ok:
        tcb.dupacks += 1
    if tcb.ca_state <= CA_CWR:
        if loss_suspected(stack, tcb):
            enter_recovery(stack, tcb)
            prr_update(tcb, max(newly_sacked, 1), False)
        elif tcb.ca_state == CA_CWR:
            if newly_sacked:
                prr_update(tcb, newly_sacked, False)
        else:
            if newly_sacked and tcb.reordering > stack.tcp.config.reordering:
                # Reordering seen: SACKed data is progress enough to grow (Linux tcp_may_raise_cwnd).
                tcb.ca.cong_avoid(tcb, newly_sacked, stack.clock.now())
            keep_open(tcb)
    elif tcb.ca_state == CA_RECOVERY:
        if uses_rack(stack, tcb):
            rack_mark_lost(stack, tcb)
        elif tcb.sack_ok:
            mark_lost_by_sack(stack, tcb)
        prr_update(tcb, max(newly_sacked, 1 if not tcb.sack_ok else 0), False)


def on_old_ack(stack: Stack, tcb: TCB) -> None:
    """An ACK below snd_una (reordered) that SACKs new data: it may reveal losses, but it is no
    duplicate ACK and feeds neither PRR nor cwnd growth (Linux: no congestion control for it)."""
    if tcb.frto:
        frto_ack(stack, tcb, False, True)
    if tcb.ca_state <= CA_CWR:
        if loss_suspected(stack, tcb):
            enter_recovery(stack, tcb)
    elif tcb.ca_state == CA_RECOVERY:
        if uses_rack(stack, tcb):
            rack_mark_lost(stack, tcb)
        else:
            mark_lost_by_sack(stack, tcb)


def state_holds(tcb: TCB) -> bool:
    """An ACK of exactly ``recover`` ends neither CWR (until data above it is ACKed, the CWR flag
    has not surely reached the peer) nor, without SACK, Loss (a duplicate ACK then could be for a
    resent segment: RFC 6582's care; Linux tcp_is_non_sack_preventing_reopen)."""
    return tcb.snd_una == tcb.recover and (
        tcb.ca_state == CA_CWR or (tcb.ca_state == CA_LOSS and not tcb.sack_ok))


def keep_open(tcb: TCB) -> None:
    """Open or Disorder (Linux tcp_try_keep_open): Disorder while segments are SACKed, lost or
    being retransmitted (without SACK: while duplicate ACKs are counted)."""
    left_out = tcb.sacked_out + tcb.lost_out if tcb.sack_ok else tcb.dupacks
    tcb.ca_state = CA_DISORDER if left_out or tcb.retrans_out else CA_OPEN


def loss_suspected(stack: Stack, tcb: TCB) -> bool:
    """Time to recover: with RACK, a segment it marked lost; else DupThresh duplicate ACKs, or
    DupThresh segments SACKed (Linux: sacked_out + 1 > reordering)."""
    threshold = tcb.reordering
    if not tcb.sack_ok:
        return tcb.dupacks >= threshold
    if uses_rack(stack, tcb):
        rack_mark_lost(stack, tcb)
        return tcb.lost_out > 0
    return tcb.sacked_out >= threshold


def uses_rack(stack: Stack, tcb: TCB) -> bool:
    """RACK finds the losses on SACK connections with tcp_recovery's first bit (Linux's default)."""
    return tcb.sack_ok and bool(stack.tcp.config.recovery & 1)


# ---------------------------------------------------------------- RACK (RFC 8985 6)


def rack_advance(tcb: TCB, item: Sent, now: float) -> None:
    """A segment was (S)ACKed: the newest one delivered, and the RTT it took, move forward."""
    rtt = now - item.sent_at
    if item.retransmits and rtt < tcb.rtt.min_rtt:
        return  # the ACK may be for the original: no measure (RFC 8985 6.2 step 2)
    tcb.rack_advanced = True
    tcb.rack_rtt = rtt
    if sent_after(item.sent_at, item.end, tcb.rack_sent_at, tcb.rack_end):
        tcb.rack_sent_at = item.sent_at
        tcb.rack_end = item.end


def sent_after(t1: float, end1: int, t2: float, end2: int) -> bool:
    return t1 > t2 or (t1 == t2 and seq_gt(end1, end2))


def rack_reo_wnd(stack: Stack, tcb: TCB) -> float:
    """How long a segment may stay undelivered after a later one (Linux tcp_rack_reo_wnd): none
    in recovery or past DupThresh SACKed segments, else a quarter of the minimum RTT."""
    if not tcb.reord_seen and (tcb.ca_state >= CA_RECOVERY or tcb.sacked_out >= tcb.reordering):
        return 0.0
    return min(tcb.rtt.min_rtt / 4, tcb.rtt.srtt)


def rack_detect_loss(stack: Stack, tcb: TCB, now: float) -> float:
    """Mark lost what was sent before the newest delivered segment and is overdue by more than
    the reordering window; returns how long the next one has left (0: none waits)."""
    reo_wnd = rack_reo_wnd(stack, tcb)
    wait = 0.0
    for item in tcb.rtx:
        if item.sacked or (item.lost and not item.in_retransmit):
            continue
        if not sent_after(tcb.rack_sent_at, tcb.rack_end, item.sent_at, item.end):
            if item.retransmits:
                continue  # the queue is in sequence order: a retransmission was sent later
            break
        remaining = tcb.rack_rtt + reo_wnd - (now - item.sent_at)
        if remaining <= 0:
            tcb.mark_retransmitted(item, False)  # a lost retransmission is lost again
            tcb.mark_lost(item)
        else:
            wait = max(wait, remaining)
    return wait


def rack_mark_lost(stack: Stack, tcb: TCB) -> None:
    """After an ACK that delivered something: look for losses, and arm the reordering timer
    for the segments not yet overdue (in the retransmission timer's place, as Linux)."""
    if not tcb.rack_advanced:
        return
    tcb.rack_advanced = False
    now = stack.clock.now()
    wait = rack_detect_loss(stack, tcb, now)
    if wait:
        # Linux: rounded up to jiffies, plus TCP_TIMEOUT_MIN.
        tcb.rto_at = now + math.ceil(wait * 1000 - 1e-9) / 1000 + TCP_TIMEOUT_MIN
        tcb.reo_pending = True
        tcb.probe_pending = False
        stack.tcp.timer_changed(tcb)


def rack_reo_timeout(stack: Stack, tcb: TCB, now: float) -> None:
    """The reordering timer fired: what is overdue now is lost; recovery starts if it was not on."""
    tcb.reo_pending = False
    prior = tcb.in_flight()
    rack_detect_loss(stack, tcb, now)
    if tcb.in_flight() != prior and tcb.ca_state != CA_RECOVERY:
        enter_recovery(stack, tcb)
        prr_update(tcb, 1, False)


def enter_recovery(stack: Stack, tcb: TCB) -> None:
    if tcb.ca_state < CA_CWR and mtu.lost(stack, tcb):
        simple_retransmit(tcb)  # the path MTU probe was lost, not to congestion
        return
    stack.counters.tcp["FastRetrans"] += 1
    if tcb.ca_state != CA_CWR:  # already reducing (ECN): the reduction goes on (Linux)
        init_cwnd_reduction(tcb)
    tcb.recover = tcb.snd_nxt
    tcb.ca_state = CA_RECOVERY
    if uses_rack(stack, tcb):
        return  # RACK has marked the losses
    mark_head_lost(tcb)
    if tcb.sack_ok:
        mark_lost_by_sack(stack, tcb)


def simple_retransmit(tcb: TCB) -> None:
    """Resend, as lost, what no longer fits in a segment, in the Loss state and with cwnd kept: the
    units changed, not the congestion (Linux tcp_simple_retransmit)."""
    for item in tcb.rtx:
        if not item.sacked and item.length > tcb.mss:
            tcb.mark_lost(item)
    if tcb.lost_out and tcb.ca_state != CA_LOSS:
        tcb.recover = tcb.snd_nxt
        tcb.ssthresh = max(tcb.ssthresh, (tcb.cwnd >> 1) + (tcb.cwnd >> 2))
        tcb.ca_state = CA_LOSS


def init_cwnd_reduction(tcb: TCB) -> None:
    """Start reducing cwnd by PRR towards the algorithm's ssthresh (Linux tcp_init_cwnd_reduction);
    with ECN, the next new segment carries CWR."""
    tcb.prior_cwnd = tcb.cwnd
    tcb.ssthresh = tcb.ca.ssthresh(tcb)
    tcb.recover = tcb.snd_nxt
    tcb.prr_delivered = 0
    tcb.prr_out = 0
    tcb.cwnd_count = 0
    tcb.tlp_high_seq = None
    tcb.ecn_queue_cwr = tcb.ecn_ok


def enter_cwr(tcb: TCB) -> None:
    """An ECN echo in the Open state: reduce cwnd once per window, with no loss (RFC 3168 6.1.2)."""
    if tcb.ca_state <= CA_DISORDER:
        init_cwnd_reduction(tcb)
        tcb.ca_state = CA_CWR


def mark_head_lost(tcb: TCB) -> None:
    for item in tcb.rtx:
        if not item.sacked:
            if not item.in_retransmit:
                tcb.mark_lost(item)
            return


def mark_lost_by_sack(stack: Stack, tcb: TCB) -> None:
    """RFC 6675 IsLost: a segment with DupThresh SACKed segments above it is lost."""
    threshold = tcb.reordering
    above = 0
    for item in reversed(tcb.rtx):
        if item.sacked:
            above += 1
        elif above >= threshold and not item.in_retransmit:
            tcb.mark_lost(item)


def prr_update(tcb: TCB, delivered: int, una_advanced: bool) -> None:
    """Proportional rate reduction (RFC 6937): set cwnd so sending tracks delivery.

    Below ssthresh, slow-start reduction bound (PRR-SSRB) with Linux's one extra segment
    only for an ACK that advanced snd_una and marked nothing newly lost
    (``una_advanced``; Linux tcp_cwnd_reduction).
    """
    if tcb.ca_state == CA_LOSS:
        return  # entered by a lost path MTU probe (simple_retransmit): no reduction
    tcb.prr_delivered += delivered
    in_flight = tcb.in_flight()
    delta = tcb.ssthresh - in_flight
    if delta < 0:
        send_count = -(-tcb.prr_delivered * tcb.ssthresh // max(tcb.prior_cwnd, 1)) - tcb.prr_out
    else:
        send_count = min(delta, max(tcb.prr_delivered - tcb.prr_out, delivered) + una_advanced)
    send_count = max(send_count, 0 if tcb.prr_out else 1)
    tcb.cwnd = in_flight + send_count


def finish_recovery(stack: Stack, tcb: TCB) -> None:
    if tcb.ca_state in (CA_RECOVERY, CA_CWR):
        tcb.cwnd = tcb.ssthresh
    tcb.ca_state = CA_OPEN
    tcb.frto = False
    tcb.dupacks = 0
    if tcb.lost_out:
        for item in tcb.rtx:
            tcb.mark_lost(item, False)


def process_tlp_ack(stack: Stack, tcb: TCB, ack: int, dsack_end: int | None, pure_dupack: bool) -> None:
    """What an ACK says of the outstanding loss probe (RFC 8985 7.4; Linux tcp_process_tlp_ack).

    A probe of new data, or a retransmitted one that a D-SACK shows was a duplicate, found
    nothing lost; an ACK beyond the probe means it repaired a loss: cwnd is reduced as on
    congestion, at once (Linux: CWR entered and ended); a pure duplicate ACK also ends it.
    """
    high = tcb.tlp_high_seq
    if high is None or seq_lt(ack, high):
        return
    if not tcb.tlp_retrans or (dsack_end is not None and seq_ge(dsack_end, high)):
        tcb.tlp_high_seq = None
    elif seq_gt(ack, high):
        init_cwnd_reduction(tcb)  # and ended at once (Linux: CWR entered and left)
        tcb.cwnd = tcb.ssthresh
        stack.counters.tcp["TCPLossProbeRecovery"] += 1
    elif pure_dupack:
        tcb.tlp_high_seq = None


def on_timeout(stack: Stack, tcb: TCB) -> None:
    """RTO expired: everything outstanding is lost, restart from one segment (RFC 5681 3.1).

    F-RTO watches the ACKs that follow (RFC 5682 3.1 step 1; Linux tcp_enter_loss): unless the
    timeout interrupted a recovery, though a repeated timeout of one is watched (its 3.2)."""
    tcb.frto = bool(stack.tcp.config.frto) and (tcb.ca_state < CA_RECOVERY or tcb.retransmits > 0)
    tcb.frto_new = False
    if tcb.ca_state <= CA_DISORDER:
        tcb.prior_ssthresh = max(tcb.ssthresh, (tcb.cwnd >> 1) + (tcb.cwnd >> 2))  # tcp_current_ssthresh
        tcb.prior_cwnd = tcb.cwnd
    elif tcb.ca_state != CA_LOSS:
        tcb.prior_ssthresh = 0  # reducing already: an undo keeps cwnd (Linux)
    if tcb.ca_state != CA_LOSS:
        tcb.ssthresh = tcb.ca.ssthresh(tcb) if tcb.ca_state <= CA_DISORDER else tcb.ssthresh
        tcb.recover = tcb.snd_nxt
    tcb.ca.loss(tcb, stack.clock.now())  # every timeout (Linux: each entry to the Loss state)
    tcb.ca_state = CA_LOSS
    tcb.cwnd = 1
    tcb.cwnd_count = 0
    tcb.dupacks = 0
    for item in tcb.rtx:
        tcb.mark_retransmitted(item, False)
        if not item.sacked:
            tcb.mark_lost(item)


def frto_ack(stack: Stack, tcb: TCB, una_advanced: bool, sacked_or_dupack: bool) -> None:
    """An ACK in the Loss state, as F-RTO reads it (RFC 5682 3.1, SACK-enhanced; Linux
    tcp_process_loss). Never-retransmitted data (S)ACKed: the RTO was spurious, undo it (3b).
    The first ACK that moves snd_una short of ``recover``: send new data, not retransmissions
    (2b). After that, a SACK or duplicate ACK: the loss was real (3a)."""
    delivered, tcb.frto_delivered = tcb.frto_delivered, False
    if tcb.ca_state != CA_LOSS:
        return
    if delivered:
        undo_loss(stack, tcb)
    elif seq_gt(tcb.snd_nxt, tcb.recover):
        if sacked_or_dupack:
            tcb.frto = False
    elif una_advanced and seq_lt(tcb.snd_una, tcb.recover):
        tcb.recover = tcb.snd_nxt
        unsent = len(tcb.send_buffer) - seq_diff(tcb.snd_nxt, tcb.snd_buf_seq)
        if unsent > 0 and seq_gt(seq_add(tcb.snd_una, tcb.snd_wnd), tcb.snd_nxt):
            tcb.frto_new = True
        else:
            tcb.frto = False  # no new data to send: conventional recovery


def undo_loss(stack: Stack, tcb: TCB) -> None:
    """A spurious RTO: nothing is lost, cwnd and ssthresh go back to what they were before it
    (Linux tcp_try_undo_loss, tcp_undo_cwnd_reduction; CUBIC's undo is Reno's)."""
    if tcb.lost_out:
        for item in tcb.rtx:
            tcb.mark_lost(item, False)
    if tcb.prior_ssthresh:
        tcb.cwnd = max(tcb.cwnd, tcb.prior_cwnd)
        tcb.ssthresh = max(tcb.ssthresh, tcb.prior_ssthresh)
    tcb.prior_ssthresh = 0
    tcb.frto = tcb.frto_new = False
    tcb.retransmits = 0
    if not state_holds(tcb):
        tcb.ca_state = CA_OPEN
    stack.counters.tcp["TCPLossUndo"] += 1
    stack.counters.tcp["TCPSpuriousRTOs"] += 1


def fack(tcb: TCB) -> int:
    """The highest sequence number SACKed (snd_una if none is above it)."""
    high = tcb.highest_sack
    return high if high is not None and seq_gt(high, tcb.snd_una) else tcb.snd_una


def check_reordering(stack: Stack, tcb: TCB, low_seq: int, prior_fack: int) -> None:
    """A segment never retransmitted was delivered below the highest SACKed one: reordering, not
    loss. DupThresh grows to that distance in segments (Linux tcp_check_sack_reordering)."""
    if not seq_lt(low_seq, prior_fack):
        return
    distance = seq_diff(fack(tcb), low_seq)
    if distance > tcb.reordering * tcb.mss:
        tcb.reordering = min(-(-distance // tcb.mss), stack.tcp.config.max_reordering)
    tcb.reord_seen += 1


def apply_sack(stack: Stack, tcb: TCB, blocks: list[tuple[int, int]], now: float,
               prior_fack: int) -> tuple[int, float | None]:
    """Mark queued segments covered by SACK blocks; returns how many became SACKed, and when the
    earliest of them that was never retransmitted was sent (an RTT sample, as Linux takes one
    from SACKed data: tcp_sacktag_one's first_sackt), None if none."""
    newly = 0
    first_sent = None
    reord = prior_fack
    for start, end in blocks:
        if not (seq_gt(end, start) and seq_ge(start, tcb.snd_una) and seq_le(end, tcb.snd_nxt)):
            continue  # D-SACK or bogus block
        for item in tcb.rtx:
            if item.sacked or seq_lt(item.seq, start) or seq_gt(item.end, end):
                continue
            tcb.mark_sacked(item)
            rack_advance(tcb, item, now)
            newly += 1
            if not item.retransmits:
                if first_sent is None or item.sent_at < first_sent:
                    first_sent = item.sent_at
                if tcb.frto and seq_le(item.end, tcb.recover):
                    tcb.frto_delivered = True
            if not item.retransmits and seq_lt(item.seq, reord):
                reord = item.seq
            if tcb.highest_sack is None or seq_gt(item.end, tcb.highest_sack):
                tcb.highest_sack = item.end
    check_reordering(stack, tcb, reord, prior_fack)
    return newly, first_sent
