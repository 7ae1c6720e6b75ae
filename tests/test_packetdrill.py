"""The packetdrill parser and runner, the project's own scripts, and the shared real ones.

Without root everything runs on pystack in virtual time; with root (CI)
the same scripts also run against the Linux kernel in a namespace, in
real time, which is what shows the runner itself is right. The project's
own scripts must pass on both. The shared scripts are read from the
folders of $PYSTACK_PACKETDRILL (``conformance.cli.shared_folders``), a set
that may grow: each reports what it found (see the summary at the end of
the run). The shared scripts where pystack, or Linux with this runner,
is known not to pass are listed below and are xfail(strict=True) with the
precise mismatch: when pystack is fixed the case fails, and its entry
here (and in docs/CONFORMANCE.md) goes. The scripts known to pass
(KNOWN_PASSES) must go on passing. A script in no list that does not
pass is a new mismatch, reported (xfail, with its first difference) rather
than failed, so that a new script in the folder does not fail a change
that has nothing to do with it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conformance import runner
from conformance.cli import SHARED_ENV, find_scripts, shared_folders
from conformance.dut import (
    _TCP_INFO_FIELDS,
    PACKETDRILL_DEFAULTS,
    linux_unavailable,
    parse_tcp_info,
    pystack_tcp_config,
    run_on,
)
from conformance.packetdrill import ELLIPSIS, ParseError, Struct, Symbol, parse, parse_file
from conformance.runner import (
    Skip,
    command_actions,
    emulate_command,
    evaluate_code,
    plan,
    run_file,
    run_on_dut,
)
from pystack.checksum import internet_checksum, pseudo_header_sum

OWN = Path(__file__).parent / "packetdrill"
OWN_SCRIPTS = [(str(p.relative_to(OWN)), p) for p in find_scripts(OWN)]
SHARED = [folder for folder in shared_folders() if folder.is_dir()]
# (name, path): the name is the path below its folder, the key of the lists below.
SHARED_SCRIPTS = [(str(p.relative_to(f)), p) for f in SHARED for p in find_scripts(f)]
LINUX_REASON = linux_unavailable()
needs_linux = pytest.mark.skipif(LINUX_REASON is not None, reason=f"Linux DUT: {LINUX_REASON}")

# Where pystack differs from Linux today (each checked: Linux passes the script with this runner).
# Strict: a listed script that passes fails the suite, so that its entry goes.
PYSTACK_MISMATCHES = {
    "cubic/cubic-rto-ss-ca-cwnd-bump.pkt": (
        "line 86: the forced push's PSH on 18001:19001 on pystack, on 19001:20001 on Linux: pystack queues a write in "
        "skbs of half the peer's window (tcp_xmit_size_goal, as its send buffer is counted), Linux 6.18 after this "
        "RTO in skbs of two segments, so the skb that passes half the window ends elsewhere"),
    "cubic/cubic-rack-reo-timeout-retrans-failed-incoming-data.pkt": (
        "line 44: tcpi_retrans 1 on pystack, 0 on Linux: the script drops every outgoing packet at the DUT's "
        "qdisc (`tc qdisc replace dev tun0 root pfifo limit 0`), so Linux's RACK retransmission fails locally "
        "and is not counted (tcp_retransmit_skb); pystack's DUT has no qdisc, and its links drop a packet "
        "without telling the sender"),
}


# Shared scripts that Linux itself does not pass with this runner (each with why), strict as above.
# All in ../shared/packetdrill-extra: what this kernel (6.18) does differs from what the upstream script
# expects (each checked in the trace: the runner sees the kernel's own packets and values).
_PSH_BURST = ("the kernel ends the 16-segment burst 10001:26001 without PSH (it marked PSH at 20001 while "
              "queueing the write, also with GSO off); the script expects the burst to end with PSH")
LINUX_MISMATCHES: dict[str, str] = {
    "epoll/epoll_out_edge.pkt": "line 40: " + _PSH_BURST,
    "epoll/epoll_out_edge_default_notsent_lowat.pkt": "line 41: " + _PSH_BURST,
    "epoll/epoll_out_edge_notsent_lowat.pkt": "line 40: " + _PSH_BURST,
    "notsent_lowat/notsent-lowat-default.pkt": "line 28: the burst ends without PSH on this kernel",
    "ioctl/ioctl-siocinq-fin.pkt": "line 28: this kernel delays the ACK of a FIN with data by 40 ms "
                                   "(TCP_DELACK_MIN); the script expects it at once",
    "gro/gro-mss-option.pkt": "line 20: the inbound data segment has no `ack`, so it acks the ISN, below "
                              "snd_una with nothing acked yet: this kernel drops it as blind data injection "
                              "(RFC 5961 5.2) and sends a challenge ACK (ack 1)",
    "cwnd_moderation/cwnd-moderation-ecn-enter-cwr-no-moderation-700.pkt": "line 24: cwnd 5 after entering "
                                                                           "CWR on this kernel; the "
                                                                           "script expects 4",
}

# Shared scripts known to pass, on both DUTs unless listed above: a regression on one of them
# fails the suite (only scripts outside every list are merely reported).
KNOWN_PASSES = frozenset({
    "blocking/blocking-accept.pkt", "blocking/blocking-connect.pkt", "blocking/blocking-read.pkt",
    "blocking/blocking-write.pkt", "close/close-local-close-then-remote-fin.pkt",
    "close/close-on-syn-sent.pkt", "close/close-remote-fin-then-close.pkt",
    "cubic/cubic-rack-reo-timeout-retrans-failed-incoming-data.pkt", "cubic/cubic-rto-ss-ca-cwnd-bump.pkt",
    "cwnd_moderation/cwnd-moderation-disorder-no-moderation.pkt", "ecn/ecn-uses-ect0.pkt",
    "fast_recovery/prr-ss-30pkt-lost-1_4-11_16.pkt", "fast_recovery/prr-ss-ack-below-snd_una-cubic.pkt",
    "fast_retransmit/fr-4pkt-sack.pkt", "fast_retransmit/fr-4pkt.pkt",
    "limited_transmit/limited-transmit-no-sack.pkt", "linux-selftests/tcp_basic_server.pkt",
    "mss/mss-getsockopt-tcp_maxseg-server.pkt", "mss/mss-setsockopt-tcp_maxseg-server.pkt",
    "nagle/sockopt_cork_nodelay.pkt", "sack/sack-shift-sacked-7-3-4-8-9-fack.pkt",
    "sack/sack-shift-sacked-7-5-6-8-9-fack.pkt",
    "shutdown/shutdown-rd-close.pkt",
    "shutdown/shutdown-rdwr-close.pkt", "shutdown/shutdown-wr-close.pkt",
    "slow_start/slow-start-ack-per-1pkt.pkt", "slow_start/slow-start-ack-per-2pkt.pkt",
    "slow_start/slow-start-ack-per-4pkt.pkt", "syscall_bad_arg/sendmsg-empty-iov.pkt",
    "ts_recent/fin_tsval.pkt",
    # ../shared/packetdrill-extra
    "eor/no-coalesce-large.pkt", "eor/no-coalesce-small.pkt", "eor/no-coalesce-subsequent.pkt",
    "epoll/epoll_in_edge.pkt", "inq/client.pkt", "inq/server.pkt", "md5/md5-only-on-client-ack.pkt",
    "notsent_lowat/notsent-lowat-setsockopt.pkt", "notsent_lowat/notsent-lowat-sysctl.pkt",
    "sack/sack-route-refresh-ip-tos.pkt", "splice/tcp_splice_loop_test.pkt",
    "syscall_bad_arg/syscall-invalid-buf-ptr.pkt", "timestamping/client-only-last-byte.pkt",
    "timestamping/server.pkt", "validate/validate-established-no-flags.pkt", "zerocopy/basic.pkt",
    "zerocopy/batch.pkt", "zerocopy/client.pkt", "zerocopy/closed.pkt", "zerocopy/epoll_edge.pkt",
    "zerocopy/epoll_exclusive.pkt", "zerocopy/epoll_oneshot.pkt", "zerocopy/maxfrags.pkt", "zerocopy/small.pkt",
})


def _params(scripts: list[tuple[str, Path]], known: dict[str, str] | None = None) -> list:
    """One case per script, ``(name, path)``; the scripts in ``known`` are xfail(strict=True)."""
    known = known or {}
    return [pytest.param(name, path, id=name, marks=[pytest.mark.xfail(strict=True, reason=known[name])]
                         if name in known else [])
            for name, path in scripts]


def run_linux(path: Path) -> runner.Outcome:
    """One run on Linux; a timing failure gets one more run (real time on a shared machine)."""
    outcome = run_file(path, "linux")
    if outcome.status == "fail" and "timing error" in outcome.message:
        outcome = run_file(path, "linux")
    return outcome


def explain(outcome: runner.Outcome) -> str:
    return f"{outcome.status}: {outcome.brief()}\n{outcome.message}\n" + "\n".join(outcome.trace)


def judge(dut: str, name: str, outcome: runner.Outcome, known: dict[str, str],
          verdict: Callable[[str, str, str, str], None]) -> None:
    """Report a shared script's outcome on ``dut``, then pass, fail or xfail as the module says."""
    if outcome.status == "skip":
        found = "skipped"
    elif name in known:
        found = "fixed" if outcome.passed else "known mismatch"
    else:
        found = "passed" if outcome.passed else "regression" if name in KNOWN_PASSES else "new mismatch"
    verdict(dut, name, found, "passes: remove its entry from the known list" if found == "fixed"
            else outcome.brief())
    if found == "skipped":
        pytest.skip(outcome.brief())
    if found == "new mismatch":
        pytest.xfail(f"new mismatch on {dut}, not in the known list: {outcome.brief()}")
    assert outcome.passed, explain(outcome)


# ---------------------------------------------------------------- the parser


def test_parser_reads_the_segment_an_icmp_line_quotes():
    script = parse("""
   +0 < icmp unreachable frag_needed mtu 1200 [1:1461(1460)]
   +0 < icmp unreachable port_unreachable [udp (10)]
""")
    tcp, udp = (e.action for e in script.events)
    assert (tcp.protocol, tcp.icmp_type, tcp.icmp_code, tcp.icmp_mtu) == ("icmp", "unreachable", "frag_needed", 1200)
    assert (tcp.icmp_echoed, tcp.seq, tcp.end_seq, tcp.payload_len, tcp.unsupported) == ("tcp", 1, 1461, 1460, None)
    assert udp.icmp_echoed == "" and "not supported" in udp.unsupported


def test_parses_every_own_script():
    """The shared scripts are parsed by their own cases below, each reporting its parse error."""
    for _, path in OWN_SCRIPTS:
        script = parse_file(path)
        assert script.events and script.events[0].time.start == 0


def test_parser_reads_times_packets_and_calls():
    script = parse("""
--tolerance_usecs=10000
`../common/defaults.sh
sysctl -q net.ipv4.tcp_tso_win_divisor=100`
    0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3   // comment
  +.1...0.200 accept(3, ..., ...) = 4
   +0 < S 0:0(0) win 32792 <mss 1000,sackOK,TS val 100 ecr 0,nop,wscale 7>
   +0 > S. 0:0(0) ack 1 <...>
 0.3~0.4 > P. 1:1001(1000) ack 1
   *  > . 1:1(0) ack 1 win 257 <nop,nop,sack 1001:2001 3001:4001>
   +0 write(4, ..., 10) = -1 EPIPE (Broken pipe)
   +0 setsockopt(4, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0
   +0 %{ assert tcpi_snd_cwnd == 10, tcpi_snd_cwnd }%
/* a block
   comment */
`/tmp/cleanup.sh`
""")
    assert script.options == {"tolerance_usecs": "10000"}
    assert "tcp_tso_win_divisor=100" in (script.init_command or "")
    assert script.cleanup_command == "/tmp/cleanup.sh"
    kinds = [e.kind for e in script.events]
    assert kinds == ["syscall", "syscall", "packet", "packet", "packet", "packet", "syscall", "syscall", "code"]
    accept = script.events[1]
    assert (accept.time.kind, accept.time.start, accept.time.blocking_end) == ("relative", 0.1, 0.2)
    syn = script.events[2].action
    assert (syn.direction, syn.flags, syn.window) == ("<", "S", 32792)
    assert [o.name for o in syn.options] == ["mss", "sackOK", "TS", "nop", "wscale"]
    assert syn.options[2].values == (100, 0)
    assert script.events[3].action.options is None
    assert script.events[4].time.kind == "absolute_range" and script.events[4].action.payload_len == 1000
    assert script.events[5].time.kind == "any"
    assert script.events[5].action.options[2].values == ((1001, 2001), (3001, 4001))
    write = script.events[6].action
    assert (write.result, write.errno, write.note) == (-1, "EPIPE", "Broken pipe")
    assert write.args[1] is ELLIPSIS and script.events[0].action.args[1] == Symbol("SOCK_STREAM")
    linger = script.events[7].action.args[3]
    assert isinstance(linger, Struct) and linger.field("onoff") == 1
    assert script.events[8].line == 13


@pytest.mark.parametrize("text, message", [
    ("0 > S 0:1(0)", "inconsistent TCP sequence numbers"),
    ("0 < S 0:0(0)", "window must be specified"),
    ("0 < S 0:0(0) win 10 <...>", "only be used with outbound"),
    ("0 < S 0:0(0) win 10 <bogus 3>", "unknown TCP option"),
    ("0 socket(", "expected"),
    ("* write(3, ..., 1) = 1", "only for outbound"),
    ("0 > X 0:0(0)", "invalid TCP flag"),
])
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(ParseError, match=message) as info:
        parse("// first line\n" + text, "t.pkt")
    assert info.value.line == 2 and str(info.value).startswith("t.pkt:2:")


# ---------------------------------------------------------------- emulation and helpers


def test_defaults_and_sysctls_are_emulated():
    settings = emulate_command("../common/defaults.sh\nsysctl -q net.ipv4.tcp_tso_win_divisor=100\n"
                               "../common/set_sysctls.py /proc/sys/net/ipv4/tcp_min_tso_segs=10")
    assert settings["net.ipv4.tcp_rmem"] == PACKETDRILL_DEFAULTS["net.ipv4.tcp_rmem"]
    assert settings["net.ipv4.tcp_tso_win_divisor"] == "100"
    assert settings["net.ipv4.tcp_min_tso_segs"] == "10"
    assert emulate_command("/tmp/sysctl_restore_${PPID}.sh") == {}
    with pytest.raises(Skip, match="not emulated"):
        emulate_command("iptables -F")


def test_commands_become_actions_as_the_shell_reads_them():
    """Comments, continuations, redirections and the commands upstream's scripts run."""
    actions = command_actions(
        "../common/defaults.sh\n# a comment line\n"
        "sysctl -e -q net/ipv4/tcp_min_tso_segs=2   # trailing comment\n"
        " ../common/set_sysctls.py \\\n\t/proc/sys/net/ipv4/tcp_mtu_probing=2 \\\n\t/proc/sys/net/ipv4/tcp_base_mss=512\n"
        "sysctl -q net.ipv4.tcp_notsent_lowat=4294967295 > /dev/null 2>&1\n"
        "tc qdisc replace dev tun0 root fq\n"
        "ip route change 192.0.2.1 via 192.168.0.2 dev tun0 advmss 600 mtu lock 640 initcwnd 11\n"
        "ethtool -K tun0 gso off tso off\n"
        "/bin/rm -f /tmp/testfile\n/bin/dd bs=1 count=5 if=/dev/zero of=/tmp/testfile status=none\n"
        'grep " 0A " /proc/net/tcp | grep ":1F90"\n'
        "echo 3 > /sys/module/tcp_cubic/parameters/hystart_detect")
    sysctls = [a[1:] for a in actions if a[0] == "sysctl"]
    assert ("net.ipv4.tcp_min_tso_segs", "2") in sysctls and ("net.ipv4.tcp_base_mss", "512") in sysctls
    assert ("net.ipv4.tcp_mtu_probing", "2") in sysctls and ("net.ipv4.tcp_notsent_lowat", "4294967295") in sysctls
    rest = [a for a in actions if a[0] != "sysctl"]
    assert rest == [
        ("qdisc", ["qdisc", "replace", "dev", "tun0", "root", "fq"]),
        ("route", ["advmss", "600", "mtu", "lock", "640", "initcwnd", "11"]),
        ("offload", {"gso": False, "tso": False}),
        ("rm", "/tmp/testfile"), ("dd", "/tmp/testfile", 5),
        ("inspect", 'grep " 0A " /proc/net/tcp | grep ":1F90"'),
        ("module", "/sys/module/tcp_cubic/parameters/hystart_detect", "3"),
    ]
    for command, why in [("ip route change 10.0.0.1 dev tun0 mtu 600", "route command"),
                         ("ip -6 route change 2001:DB8::1 dev tun0", "IPv6"),
                         ("/bin/dd if=/dev/urandom of=/tmp/x", "not emulated"),
                         ("rm -f /etc/passwd", "not emulated")]:
        with pytest.raises(Skip, match=why):
            command_actions(command)


def test_shell_arithmetic_in_commands_is_computed():
    """The kernel's selftests write sizes as ``$((32*1024*1024))``: computed as the shell does
    (integer division); anything else in ``$((...))`` is not emulated, never passed on as text."""
    assert command_actions('sysctl -q net.ipv4.tcp_rmem="4096 131072 $((32*1024*1024))"') == [
        ("sysctl", "net.ipv4.tcp_rmem", "4096 131072 33554432")]
    assert command_actions("sysctl -q net.ipv4.tcp_wmem=$((7/2 + -(3 % 2)))")[0][2] == "2"
    with pytest.raises(Skip, match="arithmetic"):
        command_actions("sysctl -q net.ipv4.tcp_wmem=$((x*2))")


def test_pystack_config_follows_the_sysctls():
    cfg, unmodelled = pystack_tcp_config(PACKETDRILL_DEFAULTS)
    assert cfg.window_scale == 8  # ilog2(15 MB) - 15, as Linux computes it
    assert (cfg.rmem_default, cfg.wmem_default, cfg.syn_retries) == (540000, 262144, 5)
    assert cfg.congestion_control == "cubic" and cfg.frto == 2 and "net.ipv4.tcp_frto" not in unmodelled
    assert "net.ipv4.tcp_dsack" in unmodelled
    reno, unmodelled = pystack_tcp_config({"net.ipv4.tcp_congestion_control": "reno"})
    assert reno.congestion_control == "reno" and not unmodelled
    assert pystack_tcp_config({"net.ipv4.tcp_congestion_control": "bbr"})[1] == ["net.ipv4.tcp_congestion_control"]
    assert pystack_tcp_config({"net.ipv4.tcp_rmem": "4096 131072 6291456"})[0].window_scale == 7


@pytest.mark.parametrize("line, why", [
    ("0 > udp (10)", "UDP packet lines"),
    ("0 cap_set(0) = 0", r"cap_set\(\) is not supported"),
    ("0 `ethtool -K tun0 lro`", "not emulated"),
    ("0 `echo 7 > /sys/module/tcp_cubic/parameters/no_such_parameter`", "global module parameter"),
])
def test_unsupported_lines_skip_the_script_with_a_reason(line, why):
    with pytest.raises(Skip, match=why):
        plan(parse(line))
    with pytest.raises(Skip, match="only IPv4"):
        plan(parse("--ip_version=ipv6\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3"))
    assert plan(parse("--mss=1000\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3")).gso_injection


def test_code_blocks_are_evaluated_without_exec():
    info = {"tcpi_snd_cwnd": 10, "tcpi_advmss": 1100}
    assert evaluate_code("assert tcpi_snd_cwnd == 10, tcpi_snd_cwnd", info) is None
    assert "failed (10)" in evaluate_code("assert tcpi_snd_cwnd == 20, tcpi_snd_cwnd", info)
    assert evaluate_code("assert tcpi_advmss == 1100; assert tcpi_snd_cwnd >= 2 * 5", info) is None
    with pytest.raises(runner._Unavailable):
        evaluate_code("assert tcpi_rtt > 0", info)
    with pytest.raises(runner._Unavailable):
        evaluate_code("import os", info)


def test_code_blocks_share_variables_as_packetdrills_one_python_does():
    variables: dict = {}
    info = {"tcpi_snd_cwnd": 58, "tcpi_ca_state": 1}
    assert evaluate_code("print(tcpi_snd_cwnd); cwnd = 58; assert tcpi_snd_cwnd == cwnd, tcpi_snd_cwnd",
                         info, variables) is None
    info["tcpi_snd_cwnd"] = 60
    assert "failed (60)" in evaluate_code("cwnd += 1; assert tcpi_snd_cwnd == cwnd, tcpi_snd_cwnd", info, variables)
    assert variables == {"cwnd": 59}
    assert evaluate_code("assert tcpi_ca_state == TCP_CA_Disorder", info) is None
    assert "(cwnd=60)" in evaluate_code("assert 5 <= tcpi_snd_cwnd <= 7, 'cwnd=%d' % tcpi_snd_cwnd", info)


def test_tcp_info_is_read_as_far_as_the_kernel_fills_it():
    values = {name: index + 1 for index, (name, _) in enumerate(_TCP_INFO_FIELDS)}
    raw = bytes([1, 0, 0, 0, 0, 7, 0x87, 1]) + b"".join(
        struct.pack(f"<{code}", values[name]) for name, code in _TCP_INFO_FIELDS)
    info = parse_tcp_info(raw)
    assert (info["tcpi_snd_wscale"], info["tcpi_rcv_wscale"], info["tcpi_delivery_rate_app_limited"]) == (7, 8, 1)
    assert info["tcpi_rwnd_limited"] == values["rwnd_limited"] and info["tcpi_total_rto_time"] == len(values)
    assert "tcpi_busy_time" not in parse_tcp_info(raw[:104])  # an older kernel's shorter struct


def test_built_segments_have_correct_checksums():
    packet = runner.build_segment("198.18.20.2", "198.18.20.1", 40000, 8080, 5, 7, 0x12, 100, 0,
                                  b"\x02\x04\x05\xb4", b"data")
    assert internet_checksum(packet[:20]) == 0
    segment = packet[20:]
    src, dst = struct.unpack("!II", packet[12:20])
    assert internet_checksum(segment, pseudo_header_sum(src, dst, 6, len(segment))) == 0


# ---------------------------------------------------------------- the runner catches mismatches

_HANDSHAKE = """`../common/defaults.sh`
    0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
   +0 setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
   +0 bind(3, ..., ...) = 0
   +0 listen(3, 1) = 0
   +0 < S 0:0(0) win 32792 <mss 1000,nop,wscale 7>
"""


@pytest.mark.parametrize("tail, line, message", [
    ("   +0 > S. 0:0(0) ack 2 <mss 1460,nop,wscale 8>\n", 7, "tcp_ack_seq"),
    ("   +0 > S. 0:0(0) ack 1 <mss 1460,nop,wscale 7>\n", 7, "tcp_options"),
    ("   +0 > S. 0:0(0) ack 1 win 3 <...>\n", 7, "tcp_window"),
    ("   +0 > . 0:0(0) ack 1 <...>\n", 7, "tcp_syn"),
    ("  +.5 > S. 0:0(0) ack 1 <...>\n", 7, "timing error"),
    ("   +0 > S. 0:0(0) ack 1 <...>\n  +.1 < . 1:1(0) ack 1 win 257\n   +0 > P. 1:11(10) ack 1\n", 9,
     "none arrived"),
    ("   +0 > S. 0:0(0) ack 1 <...>\n   +0 accept(3, ..., ...) = 4\n", 8, "blocked"),
    ("   +0 > S. 0:0(0) ack 1 <...>\n  +.1 < . 1:1(0) ack 1 win 257\n   +0 accept(3, ..., ...) = 4\n"
     "   +0 write(4, ..., 10) = 11\n", 10, "returned 10; expected 11"),
    ("   +0 > S. 0:0(0) ack 1 <...>\n  +.1 < . 1:1(0) ack 1 win 257\n   +0 accept(3, ..., ...) = 4\n"
     "   +0 write(4, ..., 2000) = 2000\n   +0 > P. 1:1501(1500) ack 1\n", 11, "payload"),
    ("   +0 > S. 0:0(0) ack 1 <...>\n  +.1 < . 1:1(0) ack 1 win 257\n   +0 accept(3, ..., ...) = 4\n"
     "   +0 %{ assert tcpi_snd_cwnd == 3 }%\n", 10, "assert tcpi_snd_cwnd == 3 failed"),
])
def test_runner_reports_the_first_mismatch_with_its_line(tail, line, message):
    outcome = run_on("pystack", run_on_dut, parse(_HANDSHAKE + tail), "pystack")
    assert outcome.status == "fail", explain(outcome)
    assert outcome.line == line and message in outcome.message, explain(outcome)


def test_runner_accepts_a_tso_segment_as_mss_sized_pieces():
    tail = ("   +0 > S. 0:0(0) ack 1 <mss 1460,nop,wscale 8>\n  +.1 < . 1:1(0) ack 1 win 257\n"
            "   +0 accept(3, ..., ...) = 4\n   +0 write(4, ..., 3500) = 3500\n   +0 > P. 1:3501(3500) ack 1\n")
    outcome = run_on("pystack", run_on_dut, parse(_HANDSHAKE + tail), "pystack")
    assert outcome.passed, explain(outcome)
    assert sum("sniffed > " in line and "line 11" in line for line in outcome.trace) == 4
    strict = run_on("pystack", run_on_dut, parse("--strict_segments\n" + _HANDSHAKE + tail), "pystack")
    assert strict.status == "fail" and "payload" in strict.message


_ESTABLISHED = _HANDSHAKE + ("   +0 > S. 0:0(0) ack 1 <mss 1460,nop,wscale 8>\n  +.1 < . 1:1(0) ack 1 win 257\n"
                              "   +0 accept(3, ..., ...) = 4\n")
_DATA_IN = "   +0 < P. 1:1001(1000) ack 1 win 257\n   +0 > . 1:1(0) ack 1001\n"
_RECVMSG_INQ = ("   +0 recvmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 600}], msg_flags=0, msg_control=["
                "{cmsg_level=SOL_TCP, cmsg_type=TCP_CM_INQ, cmsg_data=%d}]}, 0) = 600\n")


@pytest.mark.parametrize("tail", [
    ("   +0 epoll_create(1) = 5\n   +0 epoll_ctl(5, EPOLL_CTL_ADD, 4, {events=EPOLLIN|EPOLLOUT|EPOLLET, fd=4}) = 0\n"
     "   +0 epoll_wait(5, {events=EPOLLOUT, fd=4}, 1, 0) = 1\n   +0 epoll_wait(5, {events=0, ptr=0}, 1, 0) = 0\n"
     + _DATA_IN + "   +0 epoll_wait(5, {events=EPOLLIN|EPOLLOUT, fd=4}, 1, 0) = 1\n"
     "   +0 epoll_wait(5, {events=0, ptr=0}, 1, 0) = 0\n"),
    _DATA_IN + "   +0 ioctl(4, SIOCINQ, [1000]) = 0\n   +0 ioctl(4, SIOCOUTQ, [0]) = 0\n",
    "   +0 poll([{fd=4, events=POLLOUT|POLLIN, revents=POLLOUT}], 1, 0) = 1\n"
    "   +.1 < P. 1:1001(1000) ack 1 win 257\n   +0 poll([{fd=4, events=POLLIN, revents=POLLIN}], 1, 1000) = 1\n",
    # tcp_info as Linux fills it: times in microseconds (RTT 100 ms: RTO 300 ms), segments, bytes.
    "   +0 write(4, ..., 20000) = 20000\n   +0 > P. 1:10001(10000) ack 1\n"
    "   +0 %{ assert tcpi_rtt == 100000, tcpi_rtt; assert tcpi_rto == 300000, tcpi_rto }%\n"
    "   +0 %{ assert tcpi_unacked == 10; assert tcpi_notsent_bytes == 10000; assert tcpi_lost == 0 }%\n"
    "   +.1 < . 1:1(0) ack 2001 win 257\n   +0 > P. 10001:14001(4000) ack 1\n"
    "   +0 %{ assert tcpi_bytes_acked == 2000; assert tcpi_unacked == 12; assert tcpi_retrans == 0 }%\n",
])
def test_pystack_dut_has_epoll_poll_ioctl_and_tcp_info(tail):
    outcome = run_on("pystack", run_on_dut, parse(_ESTABLISHED + tail), "pystack")
    assert outcome.passed, explain(outcome)


def test_pystack_dut_splices_up_to_the_urgent_mark():
    """splice() takes what pystack's splice_read gives; at an urgent mark a blocking one gets 0."""
    tail = ("   +0 pipe([5, 6]) = 0\n   +0 < U. 1:101(100) ack 1 win 257 urg 100\n"
            "   +0 splice(4, NULL, 6, NULL, 99, 0) = 99\n   +0 splice(4, NULL, 6, NULL, 1, 0) = 0\n")
    outcome = run_on("pystack", run_on_dut, parse(_ESTABLISHED + tail), "pystack")
    assert outcome.passed, explain(outcome)
    wrong = run_on("pystack", run_on_dut, parse(_ESTABLISHED + tail.replace("= 99", "= 100", 1)), "pystack")
    assert wrong.status == "fail" and "splice() returned 99; expected 100" in wrong.message, explain(wrong)


def test_pystack_dut_is_given_a_null_buffer_as_a_bad_user_buffer():
    null = ("   +0 write(4, NULL, 1000) = -1 EFAULT (Bad address)\n" + _DATA_IN
            + "   +0 read(4, NULL, 1000) = -1 EFAULT (Bad address)\n   +0 read(4, ..., 1000) = 1000\n")
    outcome = run_on("pystack", run_on_dut, parse(_ESTABLISHED + null), "pystack")
    assert outcome.passed, explain(outcome)
    wrong = run_on("pystack", run_on_dut, parse(_ESTABLISHED + null.replace("-1 EFAULT (Bad address)", "1000", 1)),
                   "pystack")
    assert wrong.status == "fail" and "write() returned -1 (EFAULT); expected 1000" in wrong.message, explain(wrong)


@pytest.mark.parametrize("command, line", [
    ('`grep " 0A " /proc/net/tcp /proc/net/tcp6 | grep ":1F90"`', None),  # the listener on 8080
    ('`grep " 01 " /proc/net/tcp | grep ":1F90 "`', None),  # the connection accepted
    ('`grep " 0A " /proc/net/tcp | grep ":1F91"`', 10),  # no listener on 8081
    ("`cat /proc/net/udp`", 10),
])
def test_pystack_dut_shows_its_sockets_in_proc_net_tcp(command, line):
    outcome = run_on("pystack", run_on_dut, parse(_ESTABLISHED + f"   +0 {command}\n"), "pystack")
    if line is None:
        assert outcome.passed, explain(outcome)
    else:
        assert outcome.status == "fail" and outcome.line == line, explain(outcome)


def test_sendfile_sends_a_file_the_script_made_in_the_runners_own_tmp():
    name = "/tmp/pystack-test-sendfile"
    calls = (f'   +0 open("{name}", O_RDONLY) = 5\n   +0 sendfile(4, 5, [0], 5) = 5\n'
             "   +0 > P. 1:6(5) ack 1\n   +0 close(5) = 0\n")
    body = _ESTABLISHED.split("\n", 1)[1] + calls
    made = parse(f"`../common/defaults.sh\n/bin/rm -f {name}\n/bin/dd bs=1 count=5 if=/dev/zero of={name} status=none`\n" + body)
    outcome = run_on("pystack", run_on_dut, made, "pystack")
    assert outcome.passed, explain(outcome)
    assert not Path(name).exists()  # the runner's scratch folder stood for /tmp
    missing = run_on("pystack", run_on_dut, parse(_ESTABLISHED + calls), "pystack")
    assert missing.status == "fail" and "open() returned -1 (ENOENT)" in missing.message, explain(missing)


def test_recvmsg_checks_msg_flags_and_control_messages():
    plain = _DATA_IN + "   +0 recvmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 600}], msg_flags=0}, 0) = 600\n"
    assert run_on("pystack", run_on_dut, parse(_ESTABLISHED + plain), "pystack").passed
    flags = _DATA_IN + "   +0 recvmsg(4, {msg_iov(1)=[{..., 600}], msg_flags=MSG_TRUNC}, 0) = 600\n"
    outcome = run_on("pystack", run_on_dut, parse(_ESTABLISHED + flags), "pystack")
    assert outcome.status == "fail" and "Expected msg_flags 0x00000020 but got 0x00000000" in outcome.message
    control = _DATA_IN + _RECVMSG_INQ % 400
    outcome = run_on("pystack", run_on_dut, parse(_ESTABLISHED + control), "pystack")
    assert outcome.status == "fail" and "received only 0 cmsgs" in outcome.message, explain(outcome)


_LINUX_CALLS = (_ESTABLISHED + "   +0 setsockopt(4, SOL_TCP, TCP_INQ, [1], 4) = 0\n" + _DATA_IN
                + "   +0 ioctl(4, SIOCINQ, [1000]) = 0\n" + _RECVMSG_INQ % 400
                + "   +0 fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n   +0 epoll_create(1) = 5\n"
                "   +0 epoll_ctl(5, EPOLL_CTL_ADD, 4, {events=EPOLLIN|EPOLLOUT|EPOLLET, fd=4}) = 0\n"
                "   +0 epoll_wait(5, {events=EPOLLIN|EPOLLOUT, fd=4}, 1, 0) = 1\n"
                "   +0 epoll_wait(5, {events=0, ptr=0}, 1, 0) = 0\n"
                "   +0 poll([{fd=4, events=POLLIN|POLLOUT, revents=POLLIN|POLLOUT}], 1, 0) = 1\n"
                "   +0 read(4, NULL, 100) = -1 EFAULT (Bad address)\n"
                "   +0 pipe([6, 7]) = 0\n   +0 splice(4, NULL, 7, NULL, 400, 0) = 400\n"
                "   +0 ioctl(4, SIOCINQ, [0]) = 0\n")


@pytest.mark.tun
@needs_linux
@pytest.mark.parametrize("change, line, message", [
    (None, None, ""),
    (("SIOCINQ, [1000]", "SIOCINQ, [999]"), 13, "ioctl(SIOCINQ): expected 999, got 1000"),
    (("cmsg_data=400", "cmsg_data=401"), 14, "Bad data in cmsg 0: expected=401 actual=400"),
    (("{events=EPOLLIN|EPOLLOUT, fd=4}", "{events=EPOLLOUT, fd=4}"), 18,
     "expected {events=EPOLLOUT, data=4} but got {events=EPOLLIN|EPOLLOUT, data=4}"),
    (("revents=POLLIN|POLLOUT", "revents=POLLOUT"), 20, "expected revents POLLOUT but got POLLIN|POLLOUT"),
    (("-1 EFAULT", "100"), 21, "read() returned -1 (EFAULT); expected 100"),
])
def test_linux_calls_are_the_kernels(change, line, message):
    """Each emulated call on the kernel, and the runner catching a wrong expectation of each."""
    text = _LINUX_CALLS if change is None else _LINUX_CALLS.replace(*change)
    outcome = run_on("linux", run_on_dut, parse(text), "linux")
    if change is None:
        assert outcome.passed, explain(outcome)
    else:
        assert outcome.status == "fail" and outcome.line == line and message in outcome.message, explain(outcome)


_COMMANDS = ("`../common/defaults.sh\n"
             "ip route change 192.0.2.1 via 192.168.0.2 dev tun0 advmss 600 mtu lock 640\n"
             "ethtool -K tun0 gso off tso off\ntc qdisc replace dev tun0 root pfifo limit 100`\n"
             + _HANDSHAKE.split("\n", 1)[1]
             + "   +0 > S. 0:0(0) ack 1 <mss 600,nop,wscale 8>\n"
             "   +0 `grep -q \" 0A \" /proc/net/tcp`\n")


@pytest.mark.parametrize("kind", ["pystack", pytest.param("linux", marks=[pytest.mark.tun, needs_linux])])
@pytest.mark.parametrize("change, line, message", [
    (None, None, ""),
    (("advmss 600", "advmss 700"), 10, "live packet field tcp_options"),
    ((" 0A ", " 0B "), 11, "command failed with status 1"),
])
def test_commands_act_on_the_dut(kind, change, line, message):
    """The route's advmss shapes the SYN-ACK; an inspection that finds nothing fails, as in packetdrill
    (on pystack: its own route metrics and /proc/net/tcp; it has no qdiscs, which is noted)."""
    text = _COMMANDS if change is None else _COMMANDS.replace(*change)
    outcome = run_on(kind, run_on_dut, parse(text), kind)
    if change is None:
        assert outcome.passed, explain(outcome)
        assert not [note for note in outcome.notes if "route" in note], outcome.notes
    else:
        assert outcome.status == "fail" and outcome.line == line and message in outcome.message, explain(outcome)


@pytest.mark.tun
@needs_linux
def test_linux_qdisc_the_kernel_lacks_skips_the_script():
    text = _COMMANDS.replace("root pfifo limit 100", "root nosuchqdisc")
    outcome = run_on("linux", run_on_dut, parse(text), "linux")
    assert outcome.status == "skip" and "nosuchqdisc" in outcome.message, explain(outcome)


_TIMESTAMPING = (_ESTABLISHED
                 + "   +0 setsockopt(4, SOL_SOCKET, SO_TIMESTAMPING, [SOF_TIMESTAMPING_TX_SCHED | "
                   "SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_ID], 4) = 0\n"
                   "  +.1 write(4, ..., 100) = 100\n   +0 > P. 1:101(100) ack 1\n"
                   "   +0 recvmsg(4, {msg_iov(1)=[{...,0}], msg_flags=MSG_ERRQUEUE|MSG_TRUNC, msg_control=["
                   "{cmsg_level=SOL_SOCKET, cmsg_type=SCM_TIMESTAMPING, cmsg_data={scm_sec=0,scm_nsec=%d}},"
                   "{cmsg_level=CMSG_LEVEL_IP, cmsg_type=CMSG_TYPE_RECVERR, cmsg_data={ee_errno=ENOMSG, "
                   "ee_origin=SO_EE_ORIGIN_TIMESTAMPING, ee_type=0, ee_code=0, ee_info=SCM_TSTAMP_SCHED, "
                   "ee_data=99}}]}, MSG_ERRQUEUE) = 0\n")


@pytest.mark.parametrize("kind", ["pystack", pytest.param("linux", marks=[pytest.mark.tun, needs_linux])])
def test_tx_timestamps_are_checked_against_script_time(kind):
    """The SCHED stamp of a write at 0.2 s: right at 200 ms, wrong at 300 ms (beyond the tolerance);
    the kernel's on CLOCK_REALTIME, pystack's on its own (virtual) clock."""
    outcome = run_on(kind, run_on_dut, parse(_TIMESTAMPING % 200000000), kind)
    if not outcome.passed and kind == "linux":  # real time on a shared machine: one more run, as scripts get
        outcome = run_on(kind, run_on_dut, parse(_TIMESTAMPING % 200000000), kind)
    assert outcome.passed, explain(outcome)
    late = run_on(kind, run_on_dut, parse(_TIMESTAMPING % 300000000), kind)
    assert late.status == "fail" and "Bad data in cmsg 0: timestamp expected at 0.300000" in late.message, \
        explain(late)


_ZEROCOPY = (_HANDSHAKE.replace("   +0 bind", "   +0 setsockopt(3, SOL_SOCKET, SO_ZEROCOPY, [1], 4) = 0\n   +0 bind")
             + "   +0 > S. 0:0(0) ack 1 <mss 1460,nop,wscale 8>\n  +.1 < . 1:1(0) ack 1 win 257\n"
             "   +0 accept(3, ..., ...) = 4\n"
             "   +0 send(4, ..., 4000, MSG_ZEROCOPY) = 4000\n   +0 > P. 1:4001(4000) ack 1\n"
             "   +0 < . 1:1(0) ack 4001 win 257\n"
             "   +0 recvmsg(4, {msg_iov(1)=[{...,0}], msg_flags=MSG_ERRQUEUE, msg_control=["
             "{cmsg_level=CMSG_LEVEL_IP, cmsg_type=CMSG_TYPE_RECVERR, cmsg_data={ee_errno=0, "
             "ee_origin=SO_EE_ORIGIN_ZEROCOPY, ee_type=0, ee_code=SO_EE_CODE_ZEROCOPY_COPIED, "
             "ee_info=0, ee_data=%d}}]}, MSG_ERRQUEUE) = 0\n"
             "   +0 recvmsg(4, {msg_iov(1)=[{...,0}], msg_flags=0}, MSG_ERRQUEUE) = -1 EAGAIN\n")


@pytest.mark.tun
@needs_linux
def test_linux_mss_option_injects_one_gso_packet():
    """--mss=1000: the 10000-byte segment arrives as one GSO packet of 1000-byte segments (one ACK);
    without it, as one 10000-byte segment (rcv_mss: min(10000, advmss 1460))."""
    script = ("--mss=1000\n" + _HANDSHAKE.replace("mss 1000", "mss 1100")
              + "   +0 > S. 0:0(0) ack 1 <mss 1460,nop,wscale 8>\n   +0 < . 1:1(0) ack 1 win 320\n"
                "   +0 accept(3, ..., ...) = 4\n   +0 < . 1:10001(10000) ack 1 win 320\n   +0 > . 1:1(0) ack 10001\n"
                "   +0 %{ assert tcpi_rcv_mss == 1000, tcpi_rcv_mss }%\n")
    outcome = run_on("linux", run_on_dut, parse(script), "linux")
    assert outcome.passed, explain(outcome)
    whole = run_on("linux", run_on_dut, parse(script.removeprefix("--mss=1000\n")), "linux")
    assert whole.status == "fail" and "assert tcpi_rcv_mss == 1000 failed (1460)" in whole.message, explain(whole)


@pytest.mark.parametrize("kind", ["pystack", pytest.param("linux", marks=[pytest.mark.tun, needs_linux])])
def test_zerocopy_completion_is_read_from_the_error_queue(kind):
    outcome = run_on(kind, run_on_dut, parse(_ZEROCOPY % 0), kind)
    assert outcome.passed, explain(outcome)
    wrong = run_on(kind, run_on_dut, parse(_ZEROCOPY % 1), kind)
    assert wrong.status == "fail" and "bad data in extended err: expected=1 actual=0" in wrong.message, explain(wrong)


# ---------------------------------------------------------------- the project's scripts


def test_own_scripts_are_a_dozen_or_more():
    assert len(OWN_SCRIPTS) >= 12


@pytest.mark.parametrize("name, path", _params(OWN_SCRIPTS, PYSTACK_MISMATCHES))
def test_own_script_on_pystack(name, path):
    outcome = run_file(path, "pystack")
    assert outcome.passed, explain(outcome)


@pytest.mark.tun
@needs_linux
@pytest.mark.parametrize("name, path", _params(OWN_SCRIPTS))
def test_own_script_on_linux(name, path):
    outcome = run_linux(path)
    assert outcome.passed, explain(outcome)


# ---------------------------------------------------------------- the shared, real packetdrill scripts

needs_shared = pytest.mark.skipif(
    not SHARED_SCRIPTS, reason=f"no shared packetdrill scripts in {[str(f) for f in shared_folders()]}")


@needs_shared
@pytest.mark.parametrize("name, path", _params(SHARED_SCRIPTS, PYSTACK_MISMATCHES))
def test_shared_script_on_pystack(name, path, packetdrill_verdict):
    judge("pystack", name, run_file(path, "pystack"), PYSTACK_MISMATCHES, packetdrill_verdict)


@pytest.mark.tun
@needs_linux
@needs_shared
@pytest.mark.parametrize("name, path", _params(SHARED_SCRIPTS, LINUX_MISMATCHES))
def test_shared_script_on_linux(name, path, packetdrill_verdict):
    judge("linux", name, run_linux(path), LINUX_MISMATCHES, packetdrill_verdict)


@needs_shared
def test_known_lists_name_scripts_in_the_folders():
    """A listed script missing from the folders (another set of scripts there) is reported, not failed."""
    names = {name for name, _ in OWN_SCRIPTS + SHARED_SCRIPTS}
    absent = sorted((set(PYSTACK_MISMATCHES) | set(LINUX_MISMATCHES) | KNOWN_PASSES) - names)
    if absent:
        pytest.skip(f"listed as known mismatches but not in {[str(f) for f in SHARED]}: {', '.join(absent)}")


# ---------------------------------------------------------------- the command


def test_conformance_command_prints_the_table(capsys):
    from pystack.cli import main

    status = main(["conformance", str(OWN), "--dut", "pystack", "--only", "data-in", "--only", "close-*"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.splitlines()[0].split() == ["script", "pystack", "first", "mismatch"]
    assert "data-in.pkt" in out and "close-active.pkt" in out and "mss-small" not in out
    assert "3 scripts; pystack passes 3" in out


def test_conformance_command_bad_arguments(capsys):
    from pystack.cli import main

    assert main(["conformance", "/no/such/dir"]) == 2
    assert main(["conformance", str(OWN), "--only", "nothing-matches"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pystack: conformance: no such directory '/no/such/dir'",
                   f"pystack: conformance: no .pkt scripts under '{OWN}' matching nothing-matches"]


def test_conformance_command_takes_several_folders_and_defaults_to_the_shared_ones(
        tmp_path, monkeypatch, capsys):
    from pystack.cli import main

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(OWN / "data-in.pkt", other / "data-in.pkt")
    expected = [[str(OWN / "data-in.pkt"), "pass"], [str(other / "data-in.pkt"), "pass"]]
    assert main(["conformance", str(OWN), str(other), "--dut", "pystack", "--only", "data-in"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split() for line in out[1:3]] == expected
    assert out[4].startswith("2 scripts; pystack passes 2 (")
    monkeypatch.setenv(SHARED_ENV, f"{OWN}{os.pathsep}{other}")
    assert main(["conformance", "--dut", "pystack", "--only", "data-in"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()[1:3]] == expected


def test_shared_folders_come_from_one_variable(monkeypatch):
    monkeypatch.setenv(SHARED_ENV, f"/a{os.pathsep}{os.pathsep}b/c")
    assert shared_folders() == [Path("/a"), Path("b/c")]
    monkeypatch.setenv(SHARED_ENV, "")
    assert shared_folders() == [Path(__file__).parents[2] / "shared" / "packetdrill"]  # beside the checkout


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_the_stack_and_its_command_do_not_import_scapy():
    """scapy is the conformance bench's dependency, not the stack's."""
    done = _python("import sys, pystack.stack, pystack.cli; pystack.cli.build_parser(); "
                   "print([m for m in sys.modules if m.startswith('scapy')])")
    assert done.stdout == "[]\n", done.stderr


def test_conformance_command_without_scapy_says_so():
    done = _python("import sys; sys.modules['scapy'] = None; from pystack.cli import main; "
                   f"sys.exit(main(['conformance', {str(OWN)!r}, '--dut', 'pystack']))")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("pystack: conformance: needs scapy, which is not installed "
                           "(pip install 'pystack-spec[conformance]')\n")
