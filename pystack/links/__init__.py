"""Links: the wires under the stack (in-memory with impairments, pcap tap; TUN is in pystack.host),
and in virtual.py the sans-IO network of stacks in virtual time that tests and ``spec show`` use."""

from pystack.links.base import Link, LinkStats
from pystack.links.impair import ImpairmentModel, Impairments
from pystack.links.memory import MemoryLink, memory_link_pair
from pystack.links.pcap import LINKTYPE_RAW, PcapTap, PcapWriter

__all__ = [
    "LINKTYPE_RAW",
    "ImpairmentModel",
    "Impairments",
    "Link",
    "LinkStats",
    "MemoryLink",
    "PcapTap",
    "PcapWriter",
    "memory_link_pair",
]
