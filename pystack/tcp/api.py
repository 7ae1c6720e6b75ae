"""TCP socket calls: connect, listen, accept, send, receive, shutdown, close, options.

``tcp_sendmsg`` is the TCP send path the specializer folds: it
interprets flags, SO_ADU, buffer space and the connection state on every
call, then hands the data to ``tcp_output`` (coalescing, Nagle, cork, MSS).
Like the rest of the core, nothing blocks: a call that would wait raises
BlockingIOError (EAGAIN, or EINPROGRESS for connect) and the trio layer
waits on the socket.
"""

from __future__ import annotations

import errno
import math
import struct
from typing import TYPE_CHECKING

from .. import ports
from ..addr import ANY, BROADCAST, is_multicast
from ..errors import oserror, would_block
from ..socket import (
    MSG_DONTWAIT,
    MSG_OOB,
    MSG_PEEK,
    MSG_WAITALL,
    MSG_ZEROCOPY,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLOUT,
    SIOCINQ,
    SIOCOUTQ,
    SIOCOUTQNSD,
    SOF_TIMESTAMPING_OPT_ID_TCP,
    SOF_TIMESTAMPING_TX_RECORD_MASK,
    Socket,
)
from . import congestion, fastopen, mtu
from .input import copied_seq, start_handshake_segment
from .output import (
    offered_wscale,
    output_synchronized,
    restart_after_idle,
    send_ack,
    send_mss,
    size_goal,
    stream_memory_free,
    tcp_output,
    tcp_writeable,
    window_to_advertise,
    write_space,
)
from .seq import seq_add, seq_diff, seq_gt
from .tcb import (
    CAN_SEND,
    CLOSE_WAIT,
    CLOSED,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    LISTEN,
    SYN_RECEIVED,
    SYN_SENT,
    SYNCHRONIZED,
    TCB,
    TIME_WAIT,
    URG_READ,
    URG_VALID,
)

if TYPE_CHECKING:
    from ..stack import Stack

SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2
SOMAXCONN = 4096

TCP_NODELAY = 1
TCP_MAXSEG = 2
TCP_CORK = 3
TCP_KEEPIDLE = 4
TCP_KEEPINTVL = 5
TCP_KEEPCNT = 6
TCP_SYNCNT = 7
MAX_TCP_SYNCNT = 127
TCP_CONGESTION = 13
TCP_USER_TIMEOUT = 18
TCP_NOTSENT_LOWAT = 25
TCP_INQ = 36  # recvmsg reports the bytes left to read in a TCP_CM_INQ control message
TCP_CM_INQ = TCP_INQ
TCP_CA_NAME_MAX = 16
MAX_SKB_FRAGS = 17  # Linux's net.core.max_skb_frags default: page frags per skb
PAGE_SIZE = 4096
SO_KEEPALIVE = 9
SO_LINGER = 13
MSG_MORE = 0x8000  # Linux: more data follows; hold a partial segment like TCP_CORK
MSG_EOR = 0x80  # Linux: this write ends a record; later writes never join its last segment
MSG_FASTOPEN = 0x20000000  # connect, with the data in the SYN (RFC 7413)


def tcp_bind(stack: Stack, sock: Socket, addr: int, port: int) -> None:
    if sock.local_port or sock.tcb.state != CLOSED:
        raise oserror(errno.EINVAL, "socket already bound")
    if not stack.bindable(sock, addr):
        raise oserror(errno.EADDRNOTAVAIL)
    sock.local_port = ports.bind(stack.tcp.ports, sock, addr, port, stack.random)
    sock.local_addr = addr
    sock.generation += 1


def tcp_listen(stack: Stack, sock: Socket, backlog: int) -> None:
    tcb: TCB = sock.tcb
    if tcb.state not in (CLOSED, LISTEN) or sock.connected:
        raise oserror(errno.EINVAL)
    if not sock.local_port:
        tcp_bind(stack, sock, ANY, 0)
    elif tcb.state == CLOSED:
        for other in stack.tcp.ports.get(sock.local_port, ()):
            if other is not sock and other.listening and (
                other.local_addr in (ANY, sock.local_addr) or sock.local_addr == ANY
            ):
                raise oserror(errno.EADDRINUSE)
    tcb.backlog = max(0, min(backlog, SOMAXCONN))
    if tcb.state == LISTEN:
        return
    fastopen.listen_tune(stack, tcb, tcb.backlog)
    tcb.state = LISTEN
    tcb.local_addr, tcb.local_port = sock.local_addr, sock.local_port
    sock.listening = True
    stack.tcp.listeners.setdefault(sock.local_port, []).append(tcb)


def tcp_accept(stack: Stack, sock: Socket) -> Socket:
    """The next established connection (its socket still has no fd); EAGAIN if none."""
    tcb: TCB = sock.tcb
    if tcb.state != LISTEN:
        raise oserror(errno.EINVAL)
    if not tcb.accept_queue:
        raise would_block()
    child = tcb.accept_queue.popleft()
    child.parent = None
    stack.tcp.ports.setdefault(child.local_port, []).append(child.sock)
    return child.sock


def tcp_connect(stack: Stack, sock: Socket, addr: int, port: int, data: bytes | None = None) -> int:
    """Start the three-way handshake: EINPROGRESS (or an error, or EISCONN), unless the SYN carries
    some of ``data`` (a Fast Open send's): then how much. A TCP_FASTOPEN_CONNECT socket with a
    cookie cached returns 0 at once: its SYN waits for the first write."""
    tcb: TCB = sock.tcb
    if tcb.state == SYN_SENT:
        raise oserror(errno.EISCONN if tcb.defer_connect else errno.EALREADY)
    if tcb.state != CLOSED or sock.listening:
        raise oserror(errno.EISCONN if tcb.state != LISTEN else errno.EINVAL)
    if tcb.error:
        raise oserror(tcb_take_error(tcb))
    if addr == BROADCAST or is_multicast(addr) or stack.is_broadcast(addr):
        raise oserror(errno.ENETUNREACH)
    route = stack.routes.lookup(addr, stack.clock.now())
    if route is None:
        stack.counters.ip["OutNoRoutes"] += 1
        raise oserror(errno.ENETUNREACH)
    if port == 0:
        raise oserror(errno.ECONNREFUSED)
    if tcb.iss or tcb.snd_nxt:
        stack.tcp.renew(tcb)  # connecting again after a failed attempt: start from fresh state
    if not sock.local_port:
        sock.local_port = ports.bind(stack.tcp.ports, sock, ANY, 0, stack.random)
    if sock.local_addr == ANY:
        sock.local_addr = route.source
    sock.remote_addr, sock.remote_port = addr, port
    tcb.local_addr, tcb.local_port = sock.local_addr, sock.local_port
    tcb.remote_addr, tcb.remote_port = addr, port
    if tcb.key in stack.tcp.conns:
        raise oserror(errno.EADDRNOTAVAIL)
    sock.dst_cache, sock.dst_generation = route, stack.routes.generation
    mtu.mtup_init(stack, tcb)  # Linux tcp_connect_init: the MSS starts at the search's floor
    stack.tcp.update_mss(tcb)
    tcb.rcv_wscale = offered_wscale(stack.tcp.config, sock)  # SO_RCVBUF may have come after socket()
    tcb.iss = stack.tcp.initial_sequence(tcb)
    tcb.state = SYN_SENT
    stack.tcp.conns[tcb.key] = tcb
    stack.counters.tcp["ActiveOpens"] += 1
    if data is None and fastopen.defer_connect(stack, tcb):
        tcb.defer_connect = True
        return 0
    return start_connect(stack, tcb, data)


def start_connect(stack: Stack, tcb: TCB, data: bytes | None) -> int:
    """Send our SYN, with what of ``data`` it may carry (Fast Open); EINPROGRESS if none."""
    taken = fastopen.prepare_syn(stack, tcb, data)
    if taken:
        tcb.send_buffer += data[:taken]  # type: ignore[index]
    start_handshake_segment(stack, tcb, taken)
    if not taken:
        raise oserror(errno.EINPROGRESS)
    return taken


def sendmsg_fastopen(stack: Stack, sock: Socket, data: bytes, dest: tuple[int, int] | None) -> int | None:
    """A send with MSG_FASTOPEN, or the first one of a deferred TCP_FASTOPEN_CONNECT, connects with
    data in the SYN (Linux tcp_sendmsg_fastopen); None if the socket is connected already (then
    it is an ordinary send)."""
    tcb: TCB = sock.tcb
    if not stack.tcp.config.fastopen & fastopen.CLIENT_ENABLE:
        raise oserror(errno.EOPNOTSUPP)
    if tcb.defer_connect:
        tcb.defer_connect = False
        return start_connect(stack, tcb, data)
    if tcb.state == SYN_SENT:
        raise oserror(errno.EALREADY)
    if tcb.state != CLOSED or sock.connected:
        return None
    if dest is None:
        raise oserror(errno.EPIPE)
    return tcp_connect(stack, sock, dest[0], dest[1], data)


def tcp_connecting(tcb: TCB) -> bool:
    """Our connect's handshake is under way."""
    return tcb.state == SYN_SENT or (tcb.state == SYN_RECEIVED and tcb.parent is None and not tcb.fastopen_passive)


def tcp_connect_result(tcb: TCB) -> int:
    """0 once connected, the error if the attempt failed, EINPROGRESS while it goes on."""
    if tcp_connecting(tcb):
        return errno.EINPROGRESS
    if tcb.error:
        return tcb_take_error(tcb)
    return 0


def tcb_take_error(tcb: TCB) -> int:
    error, tcb.error = tcb.error, 0
    return error


def tcp_sendmsg(stack: Stack, sock: Socket, data: bytes, flags: int, pieces: list[int] | None = None,
                dest: tuple[int, int] | None = None) -> int:
    """Queue data for sending; returns how much was taken (all of it, unless space ran out).
    ``pieces``: the lengths of the buffers ``data`` was gathered from (sendmsg's iovec);
    ``dest``: where a MSG_FASTOPEN send connects to."""
    tcb: TCB = sock.tcb
    if flags & MSG_OOB:
        raise oserror(errno.EOPNOTSUPP, "urgent data is not supported")
    if flags & MSG_FASTOPEN or tcb.defer_connect:
        taken = sendmsg_fastopen(stack, sock, data, dest)
        if taken is not None:
            return taken
    if tcb.error:
        raise oserror(tcb_take_error(tcb))
    if tcb.state in (SYN_SENT, SYN_RECEIVED) and not tcb.fastopen_passive:  # (never SYN-SENT)
        raise would_block()
    if tcb.shut_wr or tcb.state not in CAN_SEND and not tcb.fastopen_passive:
        raise oserror(errno.EPIPE)  # also never connected (Linux sk_stream_wait_connect)
    if sock.adu and len(data) != sock.adu:
        raise oserror(errno.EINVAL, f"SO_ADU commits this socket to {sock.adu}-byte sends")
    if not data:
        return 0
    if tcb.nospace and not (sock.nonblocking or flags & MSG_DONTWAIT):
        raise would_block()  # a blocked write goes on once woken with room (sk_stream_wait_memory)
    restart_after_idle(stack, tcb, stack.clock.now())
    start = seq_add(tcb.snd_buf_seq, len(tcb.send_buffer))
    zerocopy = bool(flags & MSG_ZEROCOPY and sock.zerocopy)
    joins_unsent = zerocopy and seq_gt(start, tcb.snd_nxt)  # the previous write's data is still unsent
    tcb.gso_packet = 0
    taken = fill_skbs(stack, tcb, data)
    if not taken:
        raise would_block()
    if zerocopy:
        zerocopy_send(tcb, sock, start, joins_unsent)
        if pieces:
            end_full_skbs(tcb, start, pieces, taken)
    if sock.tsflags & SOF_TIMESTAMPING_TX_RECORD_MASK:
        # Linux tcp_tx_timestamp: the write's last byte is the one reported on.
        tcb.tx_stamps.append([seq_add(start, taken - 1), sock.tsflags & SOF_TIMESTAMPING_TX_RECORD_MASK, None])
    if flags & MSG_EOR and taken == len(data):
        tcb.eor_ends.append(seq_add(tcb.snd_buf_seq, len(tcb.send_buffer)))
    tcb.more = bool(flags & MSG_MORE)
    mark_write_end(tcb, seq_add(start, taken))
    # tcp_output; the state is one of CAN_SEND (checked above), so it is synchronized. Every
    # timer output arms files the TCB itself (arm_rto, arm_persist).
    output_synchronized(stack, tcb, packet=tcb.gso_packet)
    return taken


def mark_write_end(tcb: TCB, write_seq: int) -> None:
    """Linux tcp_push: the write's end gets PSH (segment_flags: where the queued data ends) unless
    MSG_MORE; with MSG_MORE only a forced push (past half the peer's largest window) marks it."""
    if not tcb.more:
        tcb.pushed_seq = write_seq
    elif seq_gt(write_seq, seq_add(tcb.pushed_seq, tcb.max_snd_wnd >> 1)):
        tcb.push_marks.append(write_seq)  # forced, MSG_MORE or not
        tcb.pushed_seq = write_seq


def end_full_skbs(tcb: TCB, start: int, pieces: list[int], taken: int) -> None:
    """MSG_ZEROCOPY pins the pages of each buffer as frags of an skb, and an skb holds at most
    MAX_SKB_FRAGS: Linux then pushes it (PSH) and starts another (tcp_sendmsg_locked), so no
    segment spans the boundary, as none spans a record's end (MSG_EOR)."""
    frags = offset = 0
    for length in pieces:
        pages = max(1, -(-length // PAGE_SIZE))
        if frags and frags + pages > MAX_SKB_FRAGS:
            if offset >= taken:
                return
            tcb.eor_ends.append(seq_add(start, offset))
            frags = 0
        frags += pages
        offset += length


def fill_skbs(stack: Stack, tcb: TCB, data: bytes) -> int:
    """Queue what Linux's tcp_sendmsg queues of ``data`` before it would wait for room; returns
    how much.

    Data goes into skbs of size_goal bytes, the unsent last one filled first
    (unless a MSG_EOR write ended it). Only a new skb needs room: the queue's
    memory, counted by truesize, below SO_SNDBUF and the unsent bytes below
    TCP_NOTSENT_LOWAT; so a write may queue up to a whole skb past the buffer.
    A full skb goes out at once if it is the next to send (tcp_push_one), and
    every half of the peer's largest window queued forces a push.
    """
    ends = tcb.skb_ends
    goal = size_goal(tcb, send_mss(tcb))
    size = len(data)
    taken = 0
    while taken < size:
        count = len(ends)
        write_seq = seq_add(tcb.snd_buf_seq, len(tcb.send_buffer))
        if count > tcb.skbs_sent and not (tcb.eor_ends and tcb.eor_ends[-1] == write_seq):
            tail = seq_diff(write_seq, ends[-2] if count > 1 else tcb.snd_buf_seq)
        else:
            tail = goal  # the last skb is sent, or a MSG_EOR write ended it: none to fill
        if tail >= goal:
            if not stream_memory_free(stack, tcb, 0):
                tcb.nospace = True  # the writer waits for room (SOCK_NOSPACE)
                break
            ends.append(write_seq)
            tail = 0
        copy = min(goal - tail, size - taken)
        tcb.send_buffer += data if copy == size else memoryview(data)[taken : taken + copy]
        write_seq = ends[-1] = seq_add(write_seq, copy)
        taken += copy
        if taken == size or tail + copy < goal:
            continue
        tcb.more = True  # the write goes on: where its data ends so far is no place for a PSH
        if seq_gt(write_seq, seq_add(tcb.pushed_seq, tcb.max_snd_wnd >> 1)):
            tcb.push_marks.append(write_seq)  # Linux forced_push: tcp_mark_push, then push
            tcb.pushed_seq = write_seq
            output_synchronized(stack, tcb, packet=tcb.gso_packet)
        elif len(ends) - 1 == tcb.skbs_sent:
            output_synchronized(stack, tcb, True, tcb.gso_packet)
    return taken


def zerocopy_send(tcb: TCB, sock: Socket, start: int, joins_unsent: bool) -> None:
    """Give the send just queued from ``start`` its notification id (Linux msg_zerocopy_realloc):
    it extends the range of the previous send if that one's data was still unsent at the tail."""
    end = seq_add(tcb.snd_buf_seq, len(tcb.send_buffer))
    pending = tcb.zerocopy_sends
    if pending and pending[-1][0] == start and joins_unsent:
        pending[-1] = (end, pending[-1][1], sock.zckey)
    else:
        pending.append((end, sock.zckey, sock.zckey))
    sock.zckey = (sock.zckey + 1) & 0xFFFFFFFF


def timestamping_key(sock: Socket, flags: int) -> int:
    """Where SO_TIMESTAMPING's OPT_ID keys count from: snd_una, or with OPT_ID_TCP the end of what
    was written (write_seq); EINVAL before the connection starts or on a listener (Linux)."""
    tcb: TCB = sock.tcb
    if tcb.state in (CLOSED, LISTEN):
        raise oserror(errno.EINVAL, "SOF_TIMESTAMPING_OPT_ID needs a connection")
    if flags & SOF_TIMESTAMPING_OPT_ID_TCP:
        return seq_add(tcb.snd_buf_seq, len(tcb.send_buffer))
    return tcb.snd_una


def tcp_recvmsg(stack: Stack, sock: Socket, bufsize: int, flags: int) -> bytes:
    """Read in-order data; b"" at end of stream; EAGAIN when nothing is there yet."""
    tcb: TCB = sock.tcb
    if bufsize < 0:
        raise ValueError("negative buffersize in recv")
    if flags & MSG_OOB:
        return tcp_recv_urgent(sock, tcb, bufsize, flags)
    if tcb.state == LISTEN:
        raise oserror(errno.ENOTCONN)
    start = 0
    mark = urgent_offset(tcb)
    if mark == 0 and not sock.oobinline:  # at the urgent byte: out of band, so skipped (Linux tcp_recvmsg)
        if flags & MSG_PEEK:
            start = 1
        else:
            del tcb.recv_buffer[:1]
            tcb.urg_data = 0
            mark = None
    available = len(tcb.recv_buffer) - start
    if available <= 0 or (flags & MSG_WAITALL and available < bufsize and not tcb.fin_received
                          and not tcb.error and not flags & MSG_DONTWAIT):
        receive_nothing(sock, tcb)
        return b""
    if mark is not None and mark > 0:
        bufsize = min(bufsize, mark)  # a read stops at the urgent mark
    data = bytes(tcb.recv_buffer[start:start + bufsize])
    if not flags & MSG_PEEK:
        del tcb.recv_buffer[: len(data)]
        window_update(stack, tcb)
    return data


def tcp_recv_urgent(sock: Socket, tcb: TCB, bufsize: int, flags: int) -> bytes:
    """recv(MSG_OOB): the urgent byte, once (Linux tcp_recv_urg); EINVAL if there is none to read
    (or it is inline), EAGAIN while it has not arrived: never waits."""
    if sock.oobinline or not tcb.urg_data or tcb.urg_data == URG_READ:
        raise oserror(errno.EINVAL)
    if tcb.urg_data & URG_VALID:
        byte = bytes([tcb.urg_data & 0xFF])
        if not flags & MSG_PEEK:
            tcb.urg_data = URG_READ
        return byte[:bufsize]
    if tcb.state == CLOSED or tcb.fin_received or tcb.shut_rd:
        return b""
    raise would_block()


def receive_nothing(sock: Socket, tcb: TCB) -> None:
    """Nothing to read: return (end of stream) if the stream ended, else raise what the call must."""
    if tcb.error:
        raise oserror(tcb_take_error(tcb))
    if tcb.fin_received or tcb.shut_rd or (tcb.state == CLOSED and sock.connected):
        return
    if tcb.state == CLOSED:
        raise oserror(errno.ENOTCONN)
    raise would_block()


def urgent_offset(tcb: TCB) -> int | None:
    """Where the urgent byte is in the receive buffer, if it is there (None: not)."""
    if not tcb.urg_data:
        return None
    offset = seq_diff(tcb.urg_seq, copied_seq(tcb))
    return offset if 0 <= offset < len(tcb.recv_buffer) else None


def tcp_splice_read(stack: Stack, sock: Socket, size: int) -> bytes:
    """What splice(2) takes from the connection (Linux tcp_splice_read, tcp_read_sock): the data
    up to the urgent mark; at the mark nothing, and a blocking call returns 0 then rather than
    wait (the data is there, it cannot be spliced); a non-blocking one fails with EAGAIN."""
    tcb: TCB = sock.tcb
    if tcb.state == LISTEN:
        raise oserror(errno.ENOTCONN)
    if not tcb.recv_buffer:
        receive_nothing(sock, tcb)
        return b""
    mark = urgent_offset(tcb)
    length = min(size, len(tcb.recv_buffer) if mark is None else mark)
    if not length:
        if sock.nonblocking:
            raise would_block()
        return b""
    data = bytes(tcb.recv_buffer[:length])
    del tcb.recv_buffer[:length]
    window_update(stack, tcb)
    return data


def tcp_poll(stack: Stack, sock: Socket) -> int:
    """What a call would not block on now, as poll(2) bits (Linux tcp_poll).

    A readiness hook that fires on change ("may have become ready") needs
    this level view when it is armed: data or a connection may already wait.
    """
    tcb: TCB = sock.tcb
    if tcb.state == LISTEN:
        return POLLIN if tcb.accept_queue else 0
    mask = POLLERR if tcb.error or sock.errqueue else 0
    # recv won't wait; a connection that failed (a refused connect too) is shut both ways (Linux tcp_done)
    read_shut = tcb.fin_received or tcb.shut_rd or (tcb.state == CLOSED and (sock.connected or bool(tcb.error)))
    if tcb.state == CLOSED or (read_shut and tcb.shut_wr):
        mask |= POLLHUP
    if read_shut or tcb.recv_buffer:
        mask |= POLLIN
    handshaking = (tcb.state == SYN_SENT and not tcb.defer_connect
                   or tcb.state == SYN_RECEIVED and not tcb.fastopen_passive)
    if not handshaking and (tcb.shut_wr or tcp_writeable(stack, tcb)):
        mask |= POLLOUT
    elif tcb.state not in (SYN_SENT, SYN_RECEIVED):
        tcb.nospace = True  # a poller waits for room: ACKs that make it will wake it (Linux tcp_poll)
    return mask


def tcp_ioctl(sock: Socket, request: int) -> int:
    """SIOCINQ, SIOCOUTQ, SIOCOUTQNSD (Linux tcp_ioctl): 0 before the connection is synchronized."""
    tcb: TCB = sock.tcb
    if request not in (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD):
        raise oserror(errno.ENOTTY)
    if tcb.state == LISTEN:
        raise oserror(errno.EINVAL)
    if tcb.state in (SYN_SENT, SYN_RECEIVED) or (tcb.state == CLOSED and not sock.connected):
        return 0
    if request == SIOCINQ:
        return len(tcb.recv_buffer)
    # Linux's write_seq: the end of the data queued, and of the FIN, which takes a sequence number.
    write_seq = seq_add(tcb.snd_buf_seq, len(tcb.send_buffer) + (1 if tcb.fin_queued else 0))
    return seq_diff(write_seq, tcb.snd_una if request == SIOCOUTQ else tcb.snd_nxt)


def tcp_inq(tcb: TCB) -> int:
    """What TCP_CM_INQ reports after a read (Linux tcp_inq_hint): bytes left to read, 1 for a FIN."""
    return len(tcb.recv_buffer) or (1 if tcb.fin_received else 0)


def window_update(stack: Stack, tcb: TCB) -> None:
    """Tell the peer about space the application freed, if it grew enough (Linux tcp_cleanup_rbuf)."""
    if tcb.state not in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2):
        return
    advertised = seq_diff(tcb.rcv_adv, tcb.rcv_nxt)
    if window_to_advertise(tcb) >= 2 * advertised and window_to_advertise(tcb) - advertised >= tcb.advmss:
        send_ack(stack, tcb)


def tcp_shutdown(stack: Stack, sock: Socket, how: int) -> None:
    tcb: TCB = sock.tcb
    if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
        raise oserror(errno.EINVAL)
    if tcb.state in (CLOSED, SYN_SENT, LISTEN) and not sock.connected:
        if tcb.state == LISTEN and how != SHUT_WR:
            return
        raise oserror(errno.ENOTCONN)
    if how in (SHUT_RD, SHUT_RDWR):
        tcb.shut_rd = True
    if how in (SHUT_WR, SHUT_RDWR):
        send_fin(stack, tcb)
    stack.wake(sock)


def send_fin(stack: Stack, tcb: TCB) -> None:
    if tcb.shut_wr:
        return
    tcb.shut_wr = True
    if tcb.state in (ESTABLISHED, SYN_RECEIVED):
        tcb.state = FIN_WAIT_1
    elif tcb.state == CLOSE_WAIT:
        tcb.state = LAST_ACK
    else:
        return
    tcb.fin_queued = True
    tcp_output(stack, tcb)
    stack.tcp.timer_changed(tcb)


def tcp_close(stack: Stack, sock: Socket) -> None:
    """The application lets go; the connection finishes on its own (or is reset)."""
    tcb: TCB = sock.tcb
    layer = stack.tcp
    tcb.orphan = True  # from now on the TCB frees its port itself when done
    if tcb.state == LISTEN:
        close_listener(stack, tcb)
    elif tcb.state in (CLOSED, SYN_SENT):
        layer.done(tcb)
    elif tcb.recv_buffer or (tcb.linger[0] and tcb.linger[1] == 0):
        # RFC 2525 / Linux: unread data (or SO_LINGER 0) means abort with a RST.
        stack.counters.tcp["AbortOnClose" if tcb.recv_buffer else "AbortOnLinger"] += 1
        layer.abort(tcb, 0, send_reset=True)
    else:
        tcb.shut_rd = True
        send_fin(stack, tcb)
        if tcb.state == FIN_WAIT_2:
            # Already half-closed: the orphan now waits at most tcp_fin_timeout (Linux tcp_close).
            tcb.fin_wait2_at = stack.clock.now() + layer.config.fin_timeout
            layer.timer_changed(tcb)


def close_listener(stack: Stack, tcb: TCB) -> None:
    sock = tcb.sock
    sock.listening = False
    listeners = stack.tcp.listeners.get(tcb.local_port, [])
    if tcb in listeners:
        listeners.remove(tcb)
        if not listeners:
            del stack.tcp.listeners[tcb.local_port]
    for child in list(stack.tcp.conns.values()):
        if child.parent is tcb and child not in tcb.accept_queue:
            stack.tcp.abort(child, 0, send_reset=child.state != SYN_RECEIVED)
    while tcb.accept_queue:  # these are reset (Fast Open ones too, still in SYN-RECEIVED)
        child = tcb.accept_queue.popleft()
        stack.tcp.abort(child, 0, send_reset=True)
    stack.tcp.done(tcb)


# ---------------------------------------------------------------- options


def flag_option(number: int) -> bool:
    """An option Linux takes as 0 or 1 only (TCP_INQ, SO_ZEROCOPY): anything else is EINVAL."""
    if not 0 <= number <= 1:
        raise oserror(errno.EINVAL)
    return bool(number)


def set_tcp_option(stack: Stack, sock: Socket, option: int, value: int | bytes, number: int) -> None:
    tcb: TCB = sock.tcb
    if option == TCP_CONGESTION:
        set_congestion_control(stack, tcb, value)
    elif option == TCP_NODELAY:
        tcb.nodelay = bool(number)
        # Linux sets TCP_NAGLE_PUSH: what TCP_CORK or MSG_MORE holds is pushed now, once.
        tcb.nagle_push = bool(number)
        tcp_output(stack, tcb)
        tcb.nagle_push = False
    elif option == TCP_CORK:
        tcb.cork = bool(number)
        if not number:
            tcb.more = False  # uncorking pushes what MSG_MORE held too (Linux)
            tcp_output(stack, tcb)
    elif option == TCP_MAXSEG:
        if number and not 88 <= number <= 32767:
            raise oserror(errno.EINVAL)
        tcb.user_mss = number
        if tcb.state != CLOSED and tcb.state != LISTEN:
            stack.tcp.update_mss(tcb)
    elif option == TCP_NOTSENT_LOWAT:
        tcb.notsent_lowat = number & 0xFFFFFFFF  # Linux keeps it unsigned
        write_space(stack, tcb)  # the writeable test changed (Linux calls sk_write_space)
    elif option == TCP_INQ:
        tcb.recvmsg_inq = flag_option(number)
    elif option in (TCP_USER_TIMEOUT, TCP_SYNCNT):
        set_give_up_option(tcb, option, number)
    elif option in (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT):
        set_keepalive_option(stack, tcb, option, number)
    elif option in fastopen.OPTIONS:
        fastopen.set_option(stack, tcb, option, value, number)
    else:
        raise oserror(errno.ENOPROTOOPT)
    stack.tcp.timer_changed(tcb)


def set_give_up_option(tcb: TCB, option: int, number: int) -> None:
    """When a connection gives up: TCP_USER_TIMEOUT (ms unacknowledged), TCP_SYNCNT (SYNs sent again)."""
    if option == TCP_USER_TIMEOUT:
        if number < 0:
            raise oserror(errno.EINVAL)
        tcb.user_timeout = number / 1000
    else:
        if not 1 <= number <= MAX_TCP_SYNCNT:
            raise oserror(errno.EINVAL)
        tcb.syn_retries = number


def set_keepalive_option(stack: Stack, tcb: TCB, option: int, number: int) -> None:
    """TCP_KEEPIDLE, TCP_KEEPINTVL (seconds, 1 to 32767), TCP_KEEPCNT (1 to 127), as Linux bounds them."""
    if not 1 <= number <= (127 if option == TCP_KEEPCNT else 32767):
        raise oserror(errno.EINVAL)
    if option == TCP_KEEPIDLE:
        tcb.keepidle = float(number)
        rearm_keepalive(stack, tcb)
    elif option == TCP_KEEPINTVL:
        tcb.keepintvl = float(number)
    else:
        tcb.keepcnt = number


def set_congestion_control(stack: Stack, tcb: TCB, value: int | bytes) -> None:
    """TCP_CONGESTION: the algorithm by Linux's name, started afresh (ENOENT: no such algorithm)."""
    name = bytes(value).split(b"\0", 1)[0] if isinstance(value, bytes | bytearray) else b""
    if name.decode("ascii", "replace") not in congestion.ALGORITHMS:
        raise oserror(errno.ENOENT, f"no congestion control {name!r}: one of {', '.join(congestion.ALGORITHMS)}")
    tcb.ca = congestion.algorithm(name.decode())
    if tcb.state in SYNCHRONIZED:
        tcb.ca.init(tcb, stack.clock.now())


def get_tcp_option(stack: Stack, sock: Socket, option: int) -> int | bytes:
    tcb: TCB = sock.tcb
    cfg = stack.tcp.config
    if option == TCP_CONGESTION:
        return tcb.ca.name.encode().ljust(TCP_CA_NAME_MAX, b"\0")
    if option == TCP_MAXSEG:
        if tcb.state in (CLOSED, LISTEN, SYN_SENT):
            return tcb.user_mss or 536
        return tcb.mss
    values = {
        TCP_NODELAY: int(tcb.nodelay),
        TCP_CORK: int(tcb.cork),
        TCP_INQ: int(tcb.recvmsg_inq),
        TCP_USER_TIMEOUT: int(tcb.user_timeout * 1000),
        TCP_KEEPIDLE: int(tcb.keepidle or cfg.keepalive_time),
        TCP_KEEPINTVL: int(tcb.keepintvl or cfg.keepalive_intvl),
        TCP_KEEPCNT: tcb.keepcnt or cfg.keepalive_probes,
        TCP_SYNCNT: tcb.syn_retries or cfg.syn_retries,
        TCP_NOTSENT_LOWAT: tcb.notsent_lowat - (1 << 32) if tcb.notsent_lowat >> 31 else tcb.notsent_lowat,
        fastopen.TCP_FASTOPEN: tcb.fastopen_max_qlen,
    }
    if option in values:
        return values[option]
    raise oserror(errno.ENOPROTOOPT)


def set_socket_option(stack: Stack, sock: Socket, option: int, value: int | bytes, number: int) -> bool:
    """TCP's SOL_SOCKET options; False if ``option`` is not one of them."""
    tcb: TCB = sock.tcb
    if option == SO_KEEPALIVE:
        tcb.keepalive = bool(number)
        rearm_keepalive(stack, tcb)
    elif option == SO_LINGER:
        if not isinstance(value, bytes | bytearray) or len(value) < 8:
            raise oserror(errno.EINVAL)
        onoff, seconds = struct.unpack("ii", bytes(value[:8]))
        tcb.linger = (bool(onoff), max(seconds, 0))
    else:
        return False
    stack.tcp.timer_changed(tcb)
    return True


def get_socket_option(sock: Socket, option: int) -> int | bytes | None:
    tcb: TCB = sock.tcb
    if option == SO_KEEPALIVE:
        return int(tcb.keepalive)
    if option == SO_LINGER:
        return struct.pack("ii", int(tcb.linger[0]), tcb.linger[1])
    return None


def rearm_keepalive(stack: Stack, tcb: TCB) -> None:
    if tcb.keepalive and tcb.state in SYNCHRONIZED and tcb.state != TIME_WAIT:
        tcb.keepalive_at = tcb.last_received_at + (tcb.keepidle or stack.tcp.config.keepalive_time)
        tcb.keepalive_at = max(tcb.keepalive_at, stack.clock.now())
    elif not tcb.keepalive:
        tcb.keepalive_at = math.inf
