"""TCP connection state: the TCB, its states, its retransmission queue, stack-wide settings."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..skbuff import TCP_SKB_TRUESIZE
from .congestion import Cubic, Reno
from .ofo import OutOfOrderQueue
from .rtt import RttEstimator

if TYPE_CHECKING:
    from ..socket import Socket

CLOSED = 0
LISTEN = 1
SYN_SENT = 2
SYN_RECEIVED = 3
ESTABLISHED = 4
FIN_WAIT_1 = 5
FIN_WAIT_2 = 6
CLOSE_WAIT = 7
CLOSING = 8
LAST_ACK = 9
TIME_WAIT = 10

STATE_NAMES = (
    "CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
    "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT",
)
# Linux's TCP_* numbers of the states, by pystack state (what tcp_info and /proc/net/tcp show).
LINUX_STATES = (7, 10, 2, 3, 1, 4, 5, 8, 11, 9, 6)
SYNCHRONIZED = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT})
CAN_SEND = frozenset({ESTABLISHED, CLOSE_WAIT})
CAN_RECEIVE = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})

# Congestion states, as Linux's tcp_ca_state.
CA_OPEN = 0
CA_DISORDER = 1  # Open, but with segments SACKed, lost or retransmitted (or duplicate ACKs)
CA_CWR = 2  # reducing cwnd after an ECN echo, with no loss
CA_RECOVERY = 3
CA_LOSS = 4

DEFAULT_MSS = 536
URG_VALID, URG_NOTYET, URG_READ = 0x100, 0x200, 0x400  # Linux TCP_URG_VALID, _NOTYET, _READ  # RFC 9293: when the peer sends no MSS option


@dataclass
class TcpConfig:
    """Stack-wide TCP settings (Linux's sysctls, with Linux's defaults)."""

    msl: float = 30.0  # TIME-WAIT lasts 2*MSL = 60 s, as Linux's TCP_TIMEWAIT_LEN
    syn_retries: int = 6
    synack_retries: int = 5
    retries2: int = 15
    fin_timeout: float = 60.0
    initial_cwnd: int = 10  # RFC 6928
    slow_start_after_idle: bool = True  # tcp_slow_start_after_idle: cwnd restarts after an idle RTO
    delack_min: float = 0.04
    delack_max: float = 0.2
    max_quickacks: int = 16
    keepalive_time: float = 7200.0
    keepalive_intvl: float = 75.0
    keepalive_probes: int = 9
    challenge_ack_limit: int | None = None  # per second, stack-wide; None: no limit (Linux >= 6.0's INT_MAX)
    invalid_ratelimit: float = 0.5  # tcp_invalid_ratelimit: a socket's challenge / out-of-window ACKs
    window_scale: int = 7
    sack: bool = True
    timestamps: bool = True
    # Buffers start where Linux's autotuning typically ends up (tcp_rmem/tcp_wmem grow to MBs).
    rmem_default: int = 1 << 20
    wmem_default: int = 1 << 20
    wmem_max: int = 4 << 20  # tcp_wmem[2]: the most the send buffer grows to on its own
    min_tso_segs: int = 2  # tcp_min_tso_segs: the fewest segments per GSO packet
    rto_min: float = 0.2
    reordering: int = 3  # duplicate-ACK threshold, where each connection's starts
    max_reordering: int = 300  # tcp_max_reordering: the most it grows to as reordering is seen
    syncookies: int = 1  # tcp_syncookies: 0 never, 1 when the SYN queue is full, 2 always
    notsent_lowat: int = 0xFFFFFFFF  # tcp_notsent_lowat: unsent bytes above which a writer is not woken
    congestion_control: str = "cubic"  # tcp_congestion_control: "cubic" or "reno"
    early_retrans: int = 3  # tcp_early_retrans: 3 and 4 send tail loss probes (RFC 8985 TLP), 0 not
    ecn: int = 2  # tcp_ecn (RFC 3168): 1 ask for ECN and accept it, 2 only accept it, 0 neither
    recovery: int = 1  # tcp_recovery: bit 1, RACK loss detection (RFC 8985); 0: RFC 6675's DupThresh
    frto: int = 2  # tcp_frto: F-RTO (RFC 5682, SACK-enhanced) finds spurious timeouts and undoes them; 0 off
    mtu_probing: int = 0  # tcp_mtu_probing (RFC 4821): 2 always probe, 1 after a black hole, 0 never
    base_mss: int = 1024  # tcp_base_mss: where the probing search starts
    probe_threshold: int = 8  # tcp_probe_threshold: the search stops below this interval (bytes)
    probe_interval: float = 600.0  # tcp_probe_interval: a new search this long after one ends
    fastopen: int = 0x1  # tcp_fastopen (RFC 7413; the bits in fastopen.py): Linux's default, client only
    # tcp_fastopen_key, the key of a server's cookies: Linux's is random at boot, pystack's is
    # packetdrill's defaults.sh one, so that runs repeat (a server sets its own).
    fastopen_key: bytes = bytes.fromhex("a1a1a1a1b2b2b2b2c3c3c3c3d4d4d4d4")


@dataclass(eq=False, slots=True)
class Sent:
    """One segment in the retransmission queue (its bytes live in the send buffer)."""

    seq: int
    end: int  # seq + data length + SYN + FIN
    flags: int  # SYN / FIN / PSH of Linux's skb (a retransmission keeps them, as Linux)
    sent_at: float
    retransmits: int = 0
    sacked: bool = False
    lost: bool = False
    in_retransmit: bool = False  # retransmitted and not yet acknowledged or marked lost again
    packet_end: bool = False  # last segment of the GSO packet it left in (where Linux's skb ended)

    @property
    def length(self) -> int:
        return (self.end - self.seq) & 0xFFFFFFFF


@dataclass(eq=False)
class TCB:
    sock: Socket
    state: int = CLOSED
    local_addr: int = 0
    local_port: int = 0
    remote_addr: int = 0
    remote_port: int = 0
    # Send sequence space.
    iss: int = 0
    snd_una: int = 0
    snd_nxt: int = 0
    snd_wnd: int = 0
    snd_wl1: int = 0
    snd_wl2: int = 0
    max_snd_wnd: int = 0
    bytes_acked: int = 0  # of our data, over the connection's life (RFC 5961 5.2 bound, as Linux)
    snd_wscale: int = 0
    # Receive sequence space.
    irs: int = 0
    rcv_nxt: int = 0
    rcv_adv: int = 0  # right edge of the window advertised (the furthest told to the peer)
    rcv_edge: int = 0  # right edge of the receive space committed (before rounding to the window scale)
    rcv_wup: int = 0  # rcv_nxt when a window was last sent (RFC 7323's Last.ACK.sent; Linux rcv_wup)
    rcv_wscale: int = 0
    # Negotiated options.
    advmss: int = 1460
    peer_mss: int = DEFAULT_MSS
    pmtu_cookie: int = 0  # the path MTU the MSS was computed for (Linux icsk_pmtu_cookie)
    # Path MTU probing (pystack.tcp.mtu): the search range, the probe outstanding (its size as an
    # MTU, 0 if none, and its sequence range) and when the last search step was.
    mtup_enabled: bool = False
    mtup_search_low: int = 0
    mtup_search_high: int = 0
    mtup_probe_size: int = 0
    mtup_probe_start: int = 0
    mtup_probe_end: int = 0
    mtup_probe_at: float = 0.0
    user_mss: int = 0  # TCP_MAXSEG
    mss: int = DEFAULT_MSS  # effective sending MSS (payload bytes per segment)
    sack_ok: bool = False
    ts_ok: bool = False
    ts_recent: int = 0
    ts_recent_stamp: float = 0.0
    ts_offset: int = 0
    want_wscale: bool = True
    want_sack: bool = True
    want_ts: bool = True
    # Send buffer: bytes from ``snd_buf_seq`` onwards, acknowledged bytes removed.
    send_buffer: bytearray = field(default_factory=bytearray)
    snd_buf_seq: int = 0
    # Linux's skbs over that buffer, as tcp_sendmsg fills them and sending splits them: where
    # each ends, and how many (from the first) have been sent. Each costs the send buffer
    # TCP_SKB_TRUESIZE besides its bytes (sk_wmem_queued).
    skb_ends: deque[int] = field(default_factory=deque)
    skbs_sent: int = 0
    nospace: bool = False  # a writer found no room and waits to be woken (SOCK_NOSPACE)
    gso_packet: int = 0  # segments in the GSO packet the last output left open (a write goes on with it)
    snd_sml: int = 0  # end of the last sub-MSS segment sent (Nagle, Minshall's variant)
    eor_ends: deque[int] = field(default_factory=deque)  # where MSG_EOR writes end, not yet sent past
    # Linux's forced push (tcp_sendmsg_locked): PSH marked, as a write is queued, where the data
    # queued since the last mark (pushed_seq) passes half the peer's largest window.
    pushed_seq: int = 0  # the end of the data when a PSH was last marked (a write's end or forced)
    push_marks: deque[int] = field(default_factory=deque)  # such marks not yet sent past
    # MSG_ZEROCOPY sends not yet acknowledged: (end of their data, first id, last id).
    zerocopy_sends: deque[tuple[int, int, int]] = field(default_factory=deque)
    # SO_TIMESTAMPING: [the last byte of a write, the report flags it asked for, the packet that
    # carried it (None until sent)], in sequence order (Linux's tskey on the skb holding that byte).
    tx_stamps: deque[list] = field(default_factory=deque)
    fin_queued: bool = False
    fin_sent: bool = False
    rtx: deque[Sent] = field(default_factory=deque)
    # The retransmission queue's scoreboard, kept as its flags change (Linux's sacked_out,
    # lost_out, retrans_out): counting it would walk the queue on every send and every ACK.
    sacked_out: int = 0
    lost_out: int = 0
    retrans_out: int = 0
    # Receive side.
    recv_buffer: bytearray = field(default_factory=bytearray)
    out_of_order: OutOfOrderQueue = field(default_factory=OutOfOrderQueue)
    sack_recent: list[int] = field(default_factory=list)  # recent out-of-order arrivals, newest first
    dsack: tuple[int, int] | None = None  # a duplicate to report in the next ACK (RFC 2883 D-SACK)
    last_oow_ack_at: float | None = None  # when the last challenge or out-of-window ACK left
    ooo_fin: int | None = None  # sequence number of a FIN that arrived out of order
    fin_received: bool = False
    # Urgent data (RFC 9293 3.8.5; Linux's urg_data and urg_seq): the urgent byte's sequence
    # number, and URG_NOTYET until it arrives, then URG_VALID | the byte, URG_READ once read with
    # MSG_OOB; 0: none pending (or passed).
    urg_seq: int = 0
    urg_data: int = 0
    # Congestion control and loss recovery (segments, as Linux counts).
    cwnd: int = 10
    ssthresh: int = 0x7FFFFFFF
    cwnd_count: int = 0
    ca_state: int = CA_OPEN
    recover: int = 0
    dupacks: int = 0
    prior_cwnd: int = 0
    prior_ssthresh: int = 0  # ssthresh before an RTO, restored if it proves spurious (0: nothing to restore)
    # F-RTO (RFC 5682; Linux tp->frto) after an RTO: the timeout may yet prove spurious; the next
    # output sends new data in place of retransmissions (its step 2b); this ACK (S)ACKed data
    # below ``recover`` that was never retransmitted (Linux FLAG_ORIG_SACK_ACKED).
    frto: bool = False
    frto_new: bool = False
    frto_delivered: bool = False
    prr_delivered: int = 0
    prr_out: int = 0
    ca: Reno | Cubic = field(default_factory=Cubic)  # the congestion control algorithm's state
    # Linux's cwnd validation (tcp_cwnd_validate): was cwnd the limit in the window that ends
    # at cwnd_usage_seq, and the most segments out in it when it was not.
    is_cwnd_limited: bool = False
    max_packets_out: int = 0
    cwnd_usage_seq: int = 0
    lsndtime: float = 0.0  # when data was last sent (an idle period ends at the next send)
    # Tail loss probe (RFC 8985 7): rto_at is the probe's time while probe_pending; a probe is
    # outstanding until snd_nxt at its sending (tlp_high_seq) is ACKed.
    probe_pending: bool = False
    reo_pending: bool = False  # rto_at is RACK's reordering timer
    # RACK (RFC 8985 6): the most recently sent segment delivered (its send time and end), and
    # the RTT it measured; whether an ACK delivered something since loss was last looked for.
    rack_sent_at: float = -math.inf
    rack_end: int = 0
    rack_rtt: float = 0.0
    rack_advanced: bool = False
    # Reordering seen (Linux tcp_check_sack_reordering): the connection's DupThresh grows to the
    # distance, in segments, that a late segment was below the highest SACKed one.
    reordering: int = 3
    reord_seen: int = 0
    highest_sack: int | None = None  # end of the highest SACKed segment (Linux's fack)
    tlp_high_seq: int | None = None
    tlp_retrans: bool = False  # the probe was a retransmission (not new data)
    # ECN (RFC 3168): asked for in our SYN, agreed; echoing a CE mark (ECE until the peer's
    # CWR); a CWR due on the next new data segment, after our cwnd was reduced.
    want_ecn: bool = False
    ecn_ok: bool = False
    ecn_demand_cwr: bool = False
    ecn_queue_cwr: bool = False
    rtt: RttEstimator = field(default_factory=RttEstimator)
    backoff: int = 0
    retransmits: int = 0  # consecutive timeouts of the same data
    first_retransmit_at: float | None = None  # of this timeout episode (Linux retrans_stamp): TCP_USER_TIMEOUT
    # Timers: absolute deadlines, math.inf when not armed.
    rto_at: float = math.inf
    delack_at: float = math.inf
    persist_at: float = math.inf
    keepalive_at: float = math.inf
    timewait_at: float = math.inf
    fin_wait2_at: float = math.inf
    timer_key: float = math.inf  # the deadline this TCB is filed under in the stack's heap
    persist_backoff: int = 0
    keepalive_probes_out: int = 0
    # ACK policy.
    ack_pending: int = 0  # bytes of full segments received and not yet acknowledged
    quickacks: int = 0
    ack_now: bool = False
    last_received_at: float = 0.0
    # Socket-level settings read on the send path.
    nodelay: bool = False
    cork: bool = False
    more: bool = False  # the last write had MSG_MORE: hold a partial segment and set no PSH (Linux)
    nagle_push: bool = False  # TCP_NODELAY being set: what cork or MSG_MORE holds goes out once
    keepalive: bool = False
    keepidle: float = 0.0  # 0: the stack's default
    keepintvl: float = 0.0
    keepcnt: int = 0
    syn_retries: int = 0  # TCP_SYNCNT (0: the stack's tcp_syn_retries)
    user_timeout: float = 0.0
    notsent_lowat: int = 0  # TCP_NOTSENT_LOWAT (0: the stack's tcp_notsent_lowat)
    recvmsg_inq: bool = False  # TCP_INQ
    linger: tuple[bool, int] = (False, 0)
    # Shutdown and errors.
    shut_rd: bool = False
    shut_wr: bool = False
    error: int = 0
    soft_error: int = 0  # from ICMP on an established connection; reported on timeout
    orphan: bool = False  # closed by the application, finishing on its own
    # The connection's own output routine, run when a segment arrives (ACK clocking), if
    # the specializer installed one (thesis 4.1: specialized code that other kernel
    # functionalities invoke); None: the generic tcp_output.
    output: Callable[[], None] | None = None
    # Listening sockets.
    backlog: int = 0
    syn_queue: int = 0
    syn_overflow_at: float = -math.inf  # when the SYN queue last overflowed (SYN cookies sent)
    accept_queue: deque[TCB] = field(default_factory=deque)
    parent: TCB | None = None
    # Fast Open (RFC 7413): a listener's queue of data-carrying SYNs not yet acknowledged
    # (TCP_FASTOPEN; 0: Fast Open is off), its own key (TCP_FASTOPEN_KEY), and on a connection,
    # the cookie option its SYN or SYN-ACK carries (the first one only) and whether data in the SYN was accepted.
    fastopen_max_qlen: int = 0
    fastopen_key: bytes | None = None
    fastopen_option: bytes | None = None  # our next SYN's (or SYN-ACK's) Fast Open option, if any
    fastopen_option_exp: bool = False
    syn_data_acked: bool = False
    syn_data_received: int = 0  # passive: the bytes a SYN carried (not data received as Linux's ato counts it)
    fastopen_passive: bool = False  # a passive Fast Open connection: may send before the handshake ends
    fastopen_connect: bool = False  # TCP_FASTOPEN_CONNECT: connect() waits for the first write's data
    defer_connect: bool = False  # connect() returned, the SYN waits for data (a cookie is cached)
    syn_fastopen: bool = False  # our SYN carried a Fast Open option (a cookie or a request)
    syn_fastopen_exp: bool = False
    syn_data: bool = False  # our SYN carried data

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.local_addr, self.local_port, self.remote_addr, self.remote_port)

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    def next_deadline(self) -> float:
        return min(self.rto_at, self.delack_at, self.persist_at, self.keepalive_at,
                   self.timewait_at, self.fin_wait2_at)

    def wmem_queued(self) -> int:
        """The send buffer's memory as Linux counts it against SO_SNDBUF (sk_wmem_queued)."""
        return len(self.send_buffer) + TCP_SKB_TRUESIZE * len(self.skb_ends)

    def packets_out(self) -> int:
        return len(self.rtx)

    def in_flight(self) -> int:
        """Segments believed in the network: out - (sacked + lost) + retransmitted (Linux)."""
        sacked = self.sacked_out if self.sack_ok else min(self.dupacks, max(len(self.rtx) - 1, 0))
        return max(len(self.rtx) - sacked - self.lost_out + self.retrans_out, 0)

    # The scoreboard: every change to a queued segment's flags, and every segment that
    # leaves the queue, goes through these, so that the counts stay those of the flags.

    def mark_sacked(self, item: Sent) -> None:
        """SACKed: no longer lost nor being retransmitted (RFC 6675)."""
        if item.sacked:
            return
        item.sacked = True
        self.sacked_out += 1
        self.mark_lost(item, False)
        self.mark_retransmitted(item, False)

    def mark_lost(self, item: Sent, lost: bool = True) -> None:
        if item.lost != lost:
            item.lost = lost
            self.lost_out += 1 if lost else -1

    def mark_retransmitted(self, item: Sent, value: bool = True) -> None:
        if item.in_retransmit != value:
            item.in_retransmit = value
            self.retrans_out += 1 if value else -1

    def queue_segment(self, item: Sent, index: int | None = None) -> None:
        """Put a segment in the retransmission queue (at the end, or before ``index``)."""
        if index is None:
            self.rtx.append(item)
        else:
            self.rtx.insert(index, item)
        self.sacked_out += item.sacked
        self.lost_out += item.lost
        self.retrans_out += item.in_retransmit

    def retire_head(self) -> Sent:
        """Take the first queued segment out (acknowledged)."""
        item = self.rtx.popleft()
        self.sacked_out -= item.sacked
        self.lost_out -= item.lost
        self.retrans_out -= item.in_retransmit
        return item

    def clear_queue(self) -> None:
        self.rtx.clear()
        self.sacked_out = self.lost_out = self.retrans_out = 0

    def scoreboard_errors(self) -> list[str]:
        """Where the counts differ from the queue's flags (for tests: empty when consistent)."""
        counted = {
            "sacked_out": sum(item.sacked for item in self.rtx),
            "lost_out": sum(item.lost for item in self.rtx),
            "retrans_out": sum(item.in_retransmit for item in self.rtx),
        }
        return [f"{name} is {getattr(self, name)}, the queue says {value}"
                for name, value in counted.items() if getattr(self, name) != value]
