"""Conformance testing against the Linux kernel: packetdrill scripts and scapy scenarios.

A tool that drives the stack, not part of it: scapy is its dependency (the
``conformance`` extra), not the stack's. One device under test (DUT) interface, two implementations
(:mod:`conformance.dut`): the Linux kernel in a network namespace
reached through a TUN device the test bench owns, and pystack driven
in-process on virtual time. :mod:`~conformance.packetdrill` reads
packetdrill scripts, :mod:`~conformance.runner` runs them against
either DUT, :mod:`~conformance.testbench` and
:mod:`~conformance.normalize` run scapy scenarios and compare the
answers field by field, and :mod:`~conformance.cli` is
``pystack conformance DIR...``.
"""
