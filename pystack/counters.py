"""Counters like ``netstat -s``: SNMP MIB names per protocol, and drops by reason.

Every packet the stack rejects is charged to exactly one drop reason, so a
test (or a curious person) can account for every packet that came in.
"""

from __future__ import annotations

from collections import Counter


class Counters:
    def __init__(self) -> None:
        self.ip: Counter[str] = Counter()
        self.icmp: Counter[str] = Counter()
        self.udp: Counter[str] = Counter()
        self.tcp: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.groups = {"Ip": self.ip, "Icmp": self.icmp, "Udp": self.udp, "Tcp": self.tcp}

    def drop(self, layer: str, reason: str) -> None:
        """Charge one rejected packet to ``layer.reason``."""
        self.drops[layer + "." + reason] += 1

    def malformed(self, layer: str, reason: str) -> None:
        """A transport message that failed to parse: its protocol's error counters and its drop."""
        group, errors = {"icmp": (self.icmp, "InErrors"), "udp": (self.udp, "InErrors"),
                         "tcp": (self.tcp, "InErrs")}[layer]
        group[errors] += 1
        if reason == "checksum":
            group["InCsumErrors"] += 1
        self.drop(layer, reason)

    def total_drops(self, layer: str | None = None) -> int:
        if layer is None:
            return sum(self.drops.values())
        prefix = layer + "."
        return sum(n for key, n in self.drops.items() if key.startswith(prefix))

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Plain nested dict of every non-zero counter (for JSON, tests, the CLI)."""
        snap = {name: dict(sorted(group.items())) for name, group in self.groups.items() if group}
        if self.drops:
            snap["Drops"] = dict(sorted(self.drops.items()))
        return snap

    def format(self) -> str:
        """Text in the spirit of ``netstat -s``."""
        lines = []
        for name, values in self.snapshot().items():
            lines.append(f"{name}:")
            lines.extend(f"    {key}: {value}" for key, value in values.items())
        return "\n".join(lines) if lines else "(no traffic)"
