"""Round-trip time estimation and the retransmission timeout (RFC 6298, with Linux's floor)."""

from __future__ import annotations

from dataclasses import dataclass

RTO_INITIAL = 1.0
RTO_MIN = 0.2  # Linux's tcp_rto_min: the floor of the variance term
RTO_MAX = 120.0
JIFFY = 0.001  # Linux's timer tick at HZ=1000, as pystack models it
TCP_TIMEOUT_MIN = 2 * JIFFY  # Linux's TCP_TIMEOUT_MIN: the shortest timer it arms


@dataclass
class RttEstimator:
    srtt: float = 0.0
    rttvar: float = 0.0
    rto: float = RTO_INITIAL
    rto_min: float = RTO_MIN
    samples: int = 0
    min_rtt: float = float("inf")  # the smallest sample (RACK's reordering window is a quarter of it)

    def sample(self, rtt: float) -> None:
        rtt = max(rtt, 0.0)
        self.min_rtt = min(self.min_rtt, rtt)
        if self.samples == 0:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.samples += 1
        self.rto = min(RTO_MAX, self.srtt + max(4 * self.rttvar, self.rto_min))

    def backed_off(self, backoff: int) -> float:
        """The timeout after ``backoff`` consecutive expirations (doubling, capped)."""
        return min(RTO_MAX, self.rto * (1 << min(backoff, 16)))
