"""FTP stages: to be written (placeholder for the core's tests)."""


def got_connection(req):
    raise NotImplementedError


def refuse_busy(req):
    raise NotImplementedError


def release(req):
    raise NotImplementedError
