"""Package boundaries: what importing the stack loads, and what `pip install .` installs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST_ONLY = ("scapy", "pyroute2", "pytun")


def test_the_stack_and_the_specializer_load_no_host_or_test_bench_library() -> None:
    """A stack on an in-memory link needs neither namespaces, TUN nor scapy."""
    code = (
        "import sys\n"
        "import pystack.stack, pystack.trio_api, pystack.links, specializer\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HOST_ONLY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_the_host_package_is_where_tun_and_namespaces_come_from() -> None:
    code = "import sys, pystack.host.tun_host\nprint('pyroute2' in sys.modules, 'pytun' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert out.split() == ["True", "True"]


def test_a_wheel_holds_only_the_projects_packages(tmp_path: Path) -> None:
    """Built from a copy of the checkout (tests, bench and demos included), as `pip install .` would."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build", ".*cache")
    shutil.copytree(ROOT, source, ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
         str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist() if "/" in name}
    packages = {name for name in top if not name.endswith(".dist-info")}
    assert {"pystack", "specializer", "tux_like"} <= packages  # `pystack serve` runs tux_like
    assert packages.isdisjoint({"tests", "bench", "demos"}), packages
