"""Header codecs: parse bytes into small header objects, build bytes from fields.

One codec per protocol. Parsers raise :class:`pystack.errors.Malformed`
with the drop reason; builders compute checksums.
"""
