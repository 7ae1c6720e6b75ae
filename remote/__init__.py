"""Remote specialization (thesis chapter 4): a device asks a server for specialized code.

* remote.protocol: the sans-IO wire format (frames, requests, signed replies);
* remote.context: the static context as plain data (device) and stand-ins (server);
* remote.device: ``make_remote_system``, the code manager and the run-time layer;
* remote.server: the specialization server (``pystack spec serve``);
* remote.thin_device: a device without the specializer (``python -m remote.thin_device``).

The device side imports neither ``specializer`` nor anything that does: tokens and
guards are pystack.tokens'.
"""
