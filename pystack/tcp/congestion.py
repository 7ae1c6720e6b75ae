"""Congestion control algorithms, one object per connection (Linux's tcp_congestion_ops).

CUBIC with HyStart is the default, as in Linux (RFC 9438 with the
arithmetic of Linux's tcp_cubic.c: beta 717/1024, C = 0.4 as 410/1024,
time in 1/1024 s, fast convergence, the TCP-friendly region, HyStart's
ACK-train and delay detection); Reno (RFC 5681) is the other choice.
Both count cwnd in segments and grow it only when the sender was limited
by it (``is_cwnd_limited``). The choice is TcpConfig.congestion_control or
the socket's TCP_CONGESTION, by Linux's names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .seq import seq_gt

if TYPE_CHECKING:
    from .tcb import TCB

HZ = 1000  # Linux's jiffies per second: CUBIC's clock ticks in milliseconds

BETA = 717  # multiplicative decrease, out of BETA_SCALE (0.7)
BETA_SCALE = 1024
CUBE_RTT_SCALE = 41 * 10  # C = 0.4, scaled by 1024 (bic_scale * 10)
BICTCP_HZ = 10  # CUBIC's time unit: 1/1024 s
CUBE_FACTOR = (1 << (10 + 3 * BICTCP_HZ)) // CUBE_RTT_SCALE
# The TCP-friendly region: a Reno window grows by one every (cwnd * BETA_FRIENDLY / 8) ACKed segments.
BETA_FRIENDLY = 8 * (BETA_SCALE + BETA) // 3 // (BETA_SCALE - BETA)

HYSTART_LOW_WINDOW = 16  # HyStart only looks at windows from 16 segments
HYSTART_MIN_SAMPLES = 8  # RTT samples per round before the delay test
HYSTART_ACK_DELTA_US = 2000  # ACKs this close belong to one train
HYSTART_DELAY_MIN_US = 4000
HYSTART_DELAY_MAX_US = 16000
GSO_MAX_SIZE = 65536  # the TSO/GRO cushion of the ACK-train threshold (Linux hystart_ack_delay)


def is_cwnd_limited(tcb: TCB) -> bool:
    """Linux tcp_is_cwnd_limited: cwnd was the limit in the current window, or, in slow
    start, cwnd is still below twice the most segments the window had out."""
    if tcb.is_cwnd_limited:
        return True
    if tcb.cwnd < tcb.ssthresh:
        return tcb.cwnd < 2 * tcb.max_packets_out
    return False


def slow_start(tcb: TCB, acked: int) -> int:
    """Grow by what was ACKed, up to ssthresh; returns the ACKed segments left over."""
    cwnd = min(tcb.cwnd + acked, tcb.ssthresh)
    acked -= cwnd - tcb.cwnd
    tcb.cwnd = cwnd
    return acked


def cong_avoid_ai(tcb: TCB, w: int, acked: int) -> None:
    """One segment per ``w`` segments ACKed (Linux tcp_cong_avoid_ai, credit carried over)."""
    if tcb.cwnd_count >= w:  # credit earned at a larger w is spent gently now
        tcb.cwnd_count = 0
        tcb.cwnd += 1
    tcb.cwnd_count += acked
    if tcb.cwnd_count >= w:
        delta = tcb.cwnd_count // w
        tcb.cwnd_count -= delta * w
        tcb.cwnd += delta


def slow_start_first(tcb: TCB, acked: int) -> int | None:
    """The head every algorithm's cong_avoid shares (Linux's tcp_reno_cong_avoid and
    bictcp_cong_avoid): no growth unless cwnd-limited; below ssthresh, slow start takes what
    it can. The ACKed segments left for congestion avoidance, or None when nothing is left."""
    if not is_cwnd_limited(tcb):
        return None
    if tcb.cwnd < tcb.ssthresh:
        acked = slow_start(tcb, acked)
        if not acked:
            return None
    return acked


class Reno:
    """NewReno's window (RFC 5681): halve on loss, one segment per window per RTT."""

    name = "reno"

    def init(self, tcb: TCB, now: float) -> None:
        """The connection is established, or the algorithm was chosen on it (nothing kept by Reno)."""

    def ssthresh(self, tcb: TCB) -> int:
        return max(tcb.cwnd >> 1, 2)

    def cong_avoid(self, tcb: TCB, acked: int, now: float) -> None:
        left = slow_start_first(tcb, acked)
        if left is not None:
            cong_avoid_ai(tcb, tcb.cwnd, left)

    def acked(self, tcb: TCB, rtt_us: int, now: float) -> None:
        """An RTT sample from newly ACKed, never retransmitted data (unused by Reno)."""

    def loss(self, tcb: TCB, now: float) -> None:
        """The retransmission timer fired: the Loss state begins (nothing kept by Reno)."""

    def tx_start(self, tcb: TCB, idle: float) -> None:
        """Sending starts again after ``idle`` seconds with nothing in flight (unused by Reno)."""


def cubic_root(value: int) -> int:
    """The integer cube root (floor)."""
    root = round(value ** (1 / 3)) if value else 0
    while root**3 > value:
        root -= 1
    while (root + 1) ** 3 <= value:
        root += 1
    return root


def jiffies(now: float) -> int:
    return int(now * HZ)


class Cubic:
    """CUBIC (RFC 9438) as Linux's tcp_cubic.c, with HyStart in slow start."""

    name = "cubic"

    __slots__ = (
        "cnt", "last_max_cwnd", "last_cwnd", "last_time", "origin_point", "k", "delay_min",
        "epoch_start", "ack_cnt", "tcp_cwnd", "found", "round_start", "end_seq", "last_ack",
        "curr_rtt", "sample_cnt",
    )

    def __init__(self) -> None:
        self.reset()
        self.round_start = self.last_ack = 0
        self.end_seq = 0
        self.curr_rtt = 0
        self.sample_cnt = 0
        self.found = False

    def reset(self) -> None:
        """Forget the curve (a new connection, or the Loss state: Linux bictcp_reset)."""
        self.cnt = 0
        self.last_max_cwnd = 0
        self.last_cwnd = 0
        self.last_time = 0
        self.origin_point = 0
        self.k = 0
        self.delay_min = 0  # microseconds; 0: no sample yet
        self.epoch_start: int | None = None  # jiffies; None: no epoch (after a reduction)
        self.ack_cnt = 0
        self.tcp_cwnd = 0
        self.found = False

    def hystart_reset(self, tcb: TCB, now: float) -> None:
        """A new HyStart round: it ends when what is sent now is ACKed."""
        self.round_start = self.last_ack = int(now * 1_000_000)
        self.end_seq = tcb.snd_nxt
        self.curr_rtt = 0xFFFFFFFF
        self.sample_cnt = 0

    def ssthresh(self, tcb: TCB) -> int:
        """Multiplicative decrease by beta, remembering W_max (with fast convergence)."""
        self.epoch_start = None
        if tcb.cwnd < self.last_max_cwnd:  # fast convergence: release bandwidth to newer flows
            self.last_max_cwnd = tcb.cwnd * (BETA_SCALE + BETA) // (2 * BETA_SCALE)
        else:
            self.last_max_cwnd = tcb.cwnd
        return max(tcb.cwnd * BETA // BETA_SCALE, 2)

    def init(self, tcb: TCB, now: float) -> None:
        self.reset()
        self.hystart_reset(tcb, now)

    def loss(self, tcb: TCB, now: float) -> None:
        self.init(tcb, now)

    def tx_start(self, tcb: TCB, idle: float) -> None:
        """After an idle period the epoch moves by it: idle time earns no growth."""
        if self.epoch_start is not None and idle > 0:
            self.epoch_start += jiffies(idle)

    def cong_avoid(self, tcb: TCB, acked: int, now: float) -> None:
        left = slow_start_first(tcb, acked)
        if left is not None:
            self.update(tcb.cwnd, left, jiffies(now))
            cong_avoid_ai(tcb, self.cnt, left)

    def update(self, cwnd: int, acked: int, tick: int) -> None:
        """Set ``cnt``, the segments to ACK per cwnd increment, from the cubic curve."""
        self.ack_cnt += acked
        if self.last_cwnd == cwnd and tick - self.last_time <= HZ // 32:
            return
        if self.epoch_start is None or tick != self.last_time:  # the curve at most once a tick
            self.last_cwnd = cwnd
            self.last_time = tick
            if self.epoch_start is None:
                self.epoch_start = tick
                self.ack_cnt = acked
                self.tcp_cwnd = cwnd
                if self.last_max_cwnd <= cwnd:
                    self.k = 0
                    self.origin_point = cwnd
                else:
                    self.k = cubic_root(CUBE_FACTOR * (self.last_max_cwnd - cwnd))
                    self.origin_point = self.last_max_cwnd
            # t, in 1/1024 s, one minimum RTT ahead: the window that will be reached when this ACKs.
            t = ((tick - self.epoch_start + -(-self.delay_min // (1_000_000 // HZ))) << BICTCP_HZ) // HZ
            offs = abs(t - self.k)
            delta = (CUBE_RTT_SCALE * offs * offs * offs) >> (10 + 3 * BICTCP_HZ)
            target = self.origin_point - delta if t < self.k else self.origin_point + delta
            self.cnt = cwnd // (target - cwnd) if target > cwnd else 100 * cwnd
            if self.last_max_cwnd == 0 and self.cnt > 20:
                self.cnt = 20  # no loss seen yet: at least 5% per RTT
        # The TCP-friendly region: never slower than Reno would be.
        delta = (cwnd * BETA_FRIENDLY) >> 3
        while self.ack_cnt > delta:
            self.ack_cnt -= delta
            self.tcp_cwnd += 1
        if self.tcp_cwnd > cwnd:
            self.cnt = min(self.cnt, cwnd // (self.tcp_cwnd - cwnd))
        self.cnt = max(self.cnt, 2)  # at most one segment per two ACKed

    def acked(self, tcb: TCB, rtt_us: int, now: float) -> None:
        """An RTT sample: track the minimum, and in slow start look for HyStart's exit."""
        tick = jiffies(now)
        if self.epoch_start is not None and tick - self.epoch_start < HZ:
            return  # samples right after a reduction are not trusted
        delay = max(rtt_us, 1)
        if self.delay_min == 0 or self.delay_min > delay:
            self.delay_min = delay
        if not self.found and tcb.cwnd < tcb.ssthresh:
            self.hystart_update(tcb, delay, now)

    def hystart_update(self, tcb: TCB, delay: int, now: float) -> None:
        if seq_gt(tcb.snd_una, self.end_seq):
            self.hystart_reset(tcb, now)
        if tcb.cwnd < HYSTART_LOW_WINDOW:
            return
        now_us = int(now * 1_000_000)
        if now_us - self.last_ack <= HYSTART_ACK_DELTA_US:
            # ACK train: ACKs kept coming close together for half the minimum RTT (no pacing here).
            self.last_ack = now_us
            threshold = (self.delay_min + self.ack_delay(tcb)) >> 1
            if now_us - self.round_start > threshold:
                self.exit_slow_start(tcb)
                return
        self.curr_rtt = min(self.curr_rtt, delay)
        if self.sample_cnt < HYSTART_MIN_SAMPLES:
            self.sample_cnt += 1
        elif self.curr_rtt > self.delay_min + min(max(self.delay_min >> 3, HYSTART_DELAY_MIN_US),
                                                  HYSTART_DELAY_MAX_US):
            self.exit_slow_start(tcb)  # delay increase: the queue is building

    def ack_delay(self, tcb: TCB) -> int:
        """The TSO/GRO cushion, in microseconds: a 64 KB burst at the pacing rate, at most 1 ms."""
        srtt = tcb.rtt.srtt
        if srtt <= 0:
            return 0
        rate = 2 * tcb.mss * max(tcb.cwnd, len(tcb.rtx)) / srtt  # Linux's slow-start pacing rate
        return min(1000, int(GSO_MAX_SIZE * 4 * 1_000_000 / rate))

    def exit_slow_start(self, tcb: TCB) -> None:
        self.found = True
        tcb.ssthresh = tcb.cwnd


ALGORITHMS: dict[str, type[Reno] | type[Cubic]] = {"reno": Reno, "cubic": Cubic}


def algorithm(name: str) -> Reno | Cubic:
    """A fresh congestion control state for ``name`` (a KeyError names one that is not there)."""
    return ALGORITHMS[name]()
