"""The code-size baseline is deterministic and counts only what the socket's protocol can run."""

from __future__ import annotations

import ast
import subprocess
import sys

from pystack.tokens.scenario import all_scenarios
from specializer.residual import OTHER_TRANSPORT, reachable_functions

PROBE = """
import sys
from specializer.residual import OTHER_TRANSPORT, reachable_functions
from pystack.tokens.scenario import all_scenarios
{imports}
scenario = all_scenarios()["{name}"]
found = reachable_functions(scenario.entry_function(), exclude=OTHER_TRANSPORT[scenario.protocol])
print(sorted(f.__module__ + "." + f.__qualname__ for f in found))
"""


def baseline_in_a_fresh_process(name: str, imports: str = "") -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(name=name, imports=imports)],
                         capture_output=True, text=True, check=True).stdout
    return ast.literal_eval(out)


def test_the_baseline_does_not_change_with_what_else_is_imported() -> None:
    plain = baseline_in_a_fresh_process("udp_send_connected")
    busy = baseline_in_a_fresh_process("udp_send_connected",
                                       "import pystack.trio_api, pystack.host.tun_host, pystack.services")
    assert plain == busy and len(plain) > 20


def test_a_udp_baseline_holds_no_tcp_code_and_a_tcp_one_no_udp_code() -> None:
    scenarios = all_scenarios()
    for name, scenario in scenarios.items():
        found = reachable_functions(scenario.entry_function(), exclude=OTHER_TRANSPORT[scenario.protocol])
        other = OTHER_TRANSPORT[scenario.protocol][0]
        assert not [f for f in found if f.__module__.startswith(other)], name
        everything = reachable_functions(scenario.entry_function())
        assert len(everything) >= len(found)
    udp = scenarios["udp_send_connected"]
    assert any(f.__module__.startswith("pystack.tcp") for f in reachable_functions(udp.entry_function())), \
        "Stack.send dispatches to TCP too: the every-transport figure counts it"
