"""Conformance testing against the Linux kernel: packetdrill scripts and scapy scenarios.

One device under test (DUT) interface, two implementations
(:mod:`pystack.conformance.dut`): the Linux kernel in a network namespace
reached through a TUN device the test bench owns, and pystack driven
in-process on virtual time. :mod:`~pystack.conformance.packetdrill` reads
packetdrill scripts, :mod:`~pystack.conformance.runner` runs them against
either DUT, :mod:`~pystack.conformance.testbench` and
:mod:`~pystack.conformance.normalize` run scapy scenarios and compare the
answers field by field, and :mod:`~pystack.conformance.cli` is
``pystack conformance DIR``.
"""
