"""A server whose stage graph and lifetimes are known by construction (after thesis figure 5.2).

listen -> accept -> read -> parse (-> parse: a cycle) -> process -> respond | respond_fast
respond -> log (terminal); respond_fast calls log directly (log: a node with both kinds of edge).
REQUEST lives from accept to respond; SCRATCH from read to process; PARSE_BUF, allocated in the
parse cycle, is annotated stingy_count(1); HEADERS is dynamic, annotated with stingy_size;
STATS is never freed (live at the terminal stages: global).
"""

from stingy.annotations import stingy_count, stingy_size


class Site:
    def __init__(self, name, size):
        self.name, self.size = name, size


def stingy_interface(kind, **roles):
    def mark(function):
        return function
    return mark


REQUEST = Site("request", 1024)
SCRATCH = Site("scratch", 2 * 1024)
HEADERS = Site("headers", None)
STATS = Site("stats", 64)
PARSE_BUF = Site("parse_buf", 512)


@stingy_interface("QueueStage", task="T", stage="S")
def QueueStage(task, stage):
    pass


@stingy_interface("Malloc", site="size")
def Malloc(site):
    return object()


@stingy_interface("Free", obj="O")
def Free(obj):
    pass


@stingy_interface("Scheduler")
def scheduler(queue):
    while queue:
        task, stage = queue.pop()
        dispatch(task, stage)


def dispatch(task, stage):
    stage(task)


def listen(task):
    QueueStage(task, accept)


def accept(task):
    task.request = Malloc(REQUEST)
    QueueStage(task, read)


def read(task):
    task.scratch = Malloc(SCRATCH)
    QueueStage(task, parse)


def parse(task):
    buf: stingy_count(1) = Malloc(PARSE_BUF)
    task.buf = buf
    complete = helper(task)
    nxt = process if complete else parse
    QueueStage(task, nxt)


def helper(task):
    local_a = local_b = 0
    return local_a == local_b


def process(task):
    Free(task.scratch)
    Free(task.buf)
    task.headers: stingy_size(300) = Malloc(HEADERS)
    QueueStage(task, HANDLERS[task.kind])


def respond(task):
    Free(task.headers)
    Free(task.request)
    QueueStage(task, log)


def respond_fast(task):
    Free(task.headers)
    Free(task.request)
    log(task)


HANDLERS = {"slow": respond, "fast": respond_fast}


def log(task):
    task.stats = Malloc(STATS)
