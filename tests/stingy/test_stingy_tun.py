"""The Stingy-scheduled tux_like serving ab for real, over pystack and over kernel sockets, in a
namespace the test creates and removes (198.18.6.0/24)."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import trio

from pystack.host.netns import why_not
from pystack.host.tun_host import tun_host
from stingy.scheduler import StingyScheduler, install
from stingy.simulate import tux_layout
from tux_like.backends.kernel_net import KernelNet
from tux_like.backends.pystack_net import PystackNet
from tux_like.config import make_config
from tux_like.driver import ServerDriver
from tux_like.server import Server

pytestmark = [pytest.mark.tun, pytest.mark.skipif(why_not() is not None, reason=f"TUN test skipped: {why_not()}"),
              pytest.mark.skipif(shutil.which("ab") is None, reason="needs ab (scripts/system-tools.sh installs it)")]
KERNEL, PYSTACK = "198.18.6.1", "198.18.6.2"


@pytest.mark.parametrize("backend", ("pystack", "kernel"))
async def test_ab_against_the_stingy_server_has_no_failed_request(tmp_path, backend):
    (tmp_path / "small.html").write_bytes(b"<p>" + b"x" * 700 + b"</p>\n")
    name = f"psst{os.getpid() % 100000}{backend[0]}"[:15]
    address = PYSTACK if backend == "pystack" else KERNEL
    config = make_config({"document_root": str(tmp_path), "listen": f"{address}:80", "logging": False})
    layout = tux_layout()
    async with tun_host(name, name, f"{KERNEL}/24", PYSTACK, seed=3) as host:
        net = PystackNet(host.network.driver) if backend == "pystack" else KernelNet(host.ns.socket)
        server = Server(config, net)
        install(server, layout)
        ti = server.threads[0]
        assert isinstance(ti.scheduler, StingyScheduler)
        driver = ServerDriver(server, net)
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            done = await host.run(["ab", "-q", "-n", "400", "-c", "40", f"http://{address}/small.html"], timeout=120)
            out = done.stdout.decode()
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            with trio.fail_after(10):
                while server.live_connections():
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    figures = {key: int(re.search(rf"^{key}:\s+(\d+)", out, re.MULTILINE).group(1))
               for key in ("Complete requests", "Failed requests")}
    assert figures == {"Complete requests": 400, "Failed requests": 0}, out
    assert "Non-2xx" not in out
    assert server.stats.requests == {200: 400}
    assert sum(ti.scheduler.elections.values()) > 0  # it chose batches
    assert server.live_objects() == 0 and sum(ti.allocator.instances.values()) == 0  # every slot back
    assert ti.allocator.fallbacks == 0  # every object came from the slab or its spill
