"""Running the stack on this host: network namespaces and TUN devices.

One way to run the stack, not the stack: nothing on the stack's own import
path (``pystack.stack``, ``pystack.trio_api``, ``pystack.links``) imports
this package, so a stack on an in-memory link needs neither pyroute2 nor
pytun.
"""
