"""Header codecs, one shape for every protocol (in the manner of smoltcp's wire module).

``parse_<proto>(data, ...)`` validates a buffer and returns one slotted
record: the header's fields and the payload they carry (``IPv4Packet``,
``UdpDatagram``, ``TcpSegment``, ``IcmpMessage``); it raises
:class:`pystack.errors.Malformed` with the drop reason. ``build_<proto>``
takes the fields as arguments, so a send path makes no record, and returns
the wire bytes with the checksum computed. IPv4's builder is the one that
writes only its header: IP output copies the payload once, into the
packet's buffer, and the header goes in front of it, in place.
"""
