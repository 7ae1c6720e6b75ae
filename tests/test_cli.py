"""The `pystack` command as a user meets it: bad arguments, no privileges, up and down."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
from scapy.layers.inet import ICMP
from scapy.utils import rdpcap

from pystack.host.netns import why_not

PYSTACK = [sys.executable, "-m", "pystack.cli"]


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYSTACK, *argv], capture_output=True, text=True, timeout=60, **kwargs)


@pytest.mark.parametrize(
    "argv, complaint",
    [
        (["up", "--mtu", "10"], "--mtu"),
        (["up", "--address", "198.18.0.300"], "--address"),
        (["up", "--address", "198.18.7.2"], "must be another address"),
        (["up", "--kernel-address", "nonsense"], "--kernel-address"),
        (["up", "--duration", "-1"], "--duration"),
        (["up", "--netns", "has space"], "--netns"),
        (["up", "--pcap", "/no/such/dir/x.pcap"], "--pcap"),
        (["up", "--bogus"], "unrecognized arguments"),
        (["frobnicate"], "invalid choice"),
        (["serve"], "--root"),
        (["serve", "--root", "/no/such/dir"], "document_root"),
        (["serve", "--root", ".", "--port", "70000"], "--port"),
        (["serve", "--root", ".", "--protocol", "gopher"], "--protocol"),
        (["serve", "--root", ".", "--config", "/no/such/file.toml"], "cannot read"),
        (["serve", "--root", ".", "--duration", "0"], "--duration"),
        (["serve", "--root", ".", "--netns", "a/b"], "--netns"),
        (["spec", "show", "udp_send_connected", "--context", "ttl=-5"], "ttl=-5"),
        (["spec", "show", "udp_send_connected", "--context", "ttl=256"], "ttl=256"),
        (["spec", "show", "udp_send_connected", "--context", "pmtudisc=9"], "pmtudisc=9"),
        (["spec", "show", "udp_send_adu", "--context", "adu=70000"], "adu=70000"),
        (["spec", "show", "udp_send_connected", "--context", "mtu=10"], "MTU 10"),
        (["spec", "show", "udp_send_connected", "--context", "address=198.18.0.1:70000"], "port"),
        (["spec", "show", "udp_send_connected", "--context", "address=no.such.host:9"], "dotted quads"),
        (["spec", "show", "tcp_send", "--context", "maxseg=1"], "maxseg=1"),
        (["spec", "show", "udp_send_connected", "--context", "ttl=x"], "integer"),
        (["spec", "show", "nosuch"], "no scenario"),
        ([], "required"),
    ],
)
def test_bad_arguments_get_one_line_and_nonzero_exit(argv, complaint):
    done = run(*argv)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("pystack: ") and complaint in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("toml, complaint", [
    ("threads = 0", "threads must be a positive integer"),
    ("colour = 'blue'", "unknown configuration key 'colour'"),
    ("protocol = ", "serve.toml"),
])
def test_a_bad_serve_config_file_gets_one_line(tmp_path, toml, complaint):
    (tmp_path / "serve.toml").write_text(toml)
    done = run("serve", "--root", str(tmp_path), "--config", str(tmp_path / "serve.toml"))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pystack: ") and complaint in lines[0], done.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop capabilities")
@pytest.mark.parametrize("command", [["up"], ["serve", "--root", "."]])
def test_without_net_admin_says_so_in_one_line(command):
    argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin,-sys_admin", *PYSTACK, *command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "CAP_NET_ADMIN" in lines[0] and "sudo" in lines[0] and "in-memory" in lines[0]


@pytest.mark.tun
def test_up_answers_ping_writes_pcap_and_cleans_up_on_sigterm(tmp_path):
    reason = why_not()
    if reason:
        pytest.skip(f"TUN test skipped: {reason}")
    if shutil.which("ping") is None:
        pytest.skip("needs ping (Debian package iputils-ping)")
    netns, pcap = f"pst-cli{os.getpid() % 10000}", tmp_path / "up.pcap"
    stack = subprocess.Popen(
        [*PYSTACK, "up", "--netns", netns, "--tun", f"pstc{os.getpid() % 10000}",
         "--kernel-address", "198.18.2.1/24", "--address", "198.18.2.2", "--pcap", str(pcap),
         "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert stack.stdout.readline() == "ready 198.18.2.2\n"
        pinged = subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", "2", "-i", "0.2", "198.18.2.2"],
                                capture_output=True, text=True, timeout=30)
        assert pinged.returncode == 0, pinged.stdout + pinged.stderr
    finally:
        stack.send_signal(signal.SIGTERM)
        out, err = stack.communicate(timeout=30)
    assert stack.returncode == 0, err
    assert "OutEchoReps: 2" in out
    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    packets = rdpcap(str(pcap))
    assert sum(1 for p in packets if p.haslayer(ICMP) and p[ICMP].type == 0) == 2
    assert sum(1 for p in packets if p.haslayer(ICMP) and p[ICMP].type == 8) == 2


def test_up_stops_by_itself_after_duration():
    if why_not():
        pytest.skip(f"TUN test skipped: {why_not()}")
    done = run("up", "--netns", f"pst-dur{os.getpid() % 10000}", "--tun", f"pstd{os.getpid() % 10000}",
               "--kernel-address", "198.18.3.1/24", "--address", "198.18.3.2", "--duration", "0.5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "ready 198.18.3.2"


def test_memory_demo_runs_without_root():
    done = subprocess.run([sys.executable, "-m", "demos.memory_demo"], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    assert "echo-reply" in done.stdout
    assert "b'hello, pystack'" in done.stdout
    assert "port-unreachable" in done.stdout
