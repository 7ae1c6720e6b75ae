"""pystack: a trio-driven userspace TCP/IP stack written to be specialized."""

from .stack import Stack

__all__ = ["Stack"]
