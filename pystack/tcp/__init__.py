"""TCP (RFC 9293) for pystack, sans I/O.

``tcb`` holds connection state, ``input`` processes arriving segments,
``output`` decides what to send and builds segments, ``recovery`` is
congestion control and loss recovery (NewReno, SACK with PRR),
``timers`` the retransmission, delayed-ACK, persist, keepalive and
TIME-WAIT timers, and ``api`` the socket calls.
"""
