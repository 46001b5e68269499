"""Decoding processes that survive their own deaths: a dead or stuck worker costs one page.

`multiprocessing.Pool` never returns a task whose worker was killed (the OOM killer, a crash in
libtiff): its `imap` waits forever. `PagePool.imap` watches every worker's process sentinel
beside its result pipe, so a death is seen at once, and times every page:
- the page a worker was decoding when it died is retried once, alone, in a fresh worker; if it
  kills that one too, it gets the reason `decoder crashed (signal N)`; the worker's other pages
  are simply handed out again;
- a page still decoding after `page_timeout` seconds (a worker's start-up not counted) gets its
  worker killed and the reason
  `decoding took longer than --page_timeout=T s`;
- `MAX_DEATHS_IN_A_ROW` worker deaths with no page finished in between stop the run with
  `WorkersKeepDying` (a machine out of memory, a broken installation), rather than going on.
Results come back in job order whatever happened, so the shards are the same as without a crash.

The first workers are forked from the converter (milliseconds). Replacements come from
multiprocessing's forkserver, a fresh interpreter started at the first death: forking the
converter itself later would copy the state of the threads that reading s3:// has started by
then (the AWS SDK's), and such a child hangs on its first s3:// read (seen with moto's server).
The forkserver costs a few seconds once, only in a run where a worker died.
"""
import collections
import ctypes
import multiprocessing
from multiprocessing import connection
import signal
import time

from tfrecords_tool import errors

MAX_DEATHS_IN_A_ROW = 5
STARTUP_TIMEOUT = 300  # seconds a replacement may take to start (the forkserver imports TF)
_CHUNK = 16  # pages per message to a worker
_READY = "ready"
_PR_SET_PDEATHSIG = 1


class WorkersKeepDying(errors.ToolError):
    """Decoding workers die one after another without finishing a page."""


def _die_with_parent():
    """A stuck worker (a page on a hung network mount) must not outlive a killed converter."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: workers still exit at their next message
        pass


def _serve(conn, function):
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        conn.send(_READY)
        while True:
            chunk = conn.recv()
            if chunk is None:
                return
            for index, job in chunk:
                conn.send((index, function(job)))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return  # the parent has gone


class _Worker:

    def __init__(self, context, function):
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_conn, function), daemon=True)
        self.process.start()
        child_conn.close()
        self.held = collections.deque()  # (index, job) sent and not yet answered, in order
        self.ready = False  # its start-up does not count against the page timeout
        self.since = time.monotonic()  # when its current page (or its start-up) started

    def give(self, chunk):
        self.held.extend(chunk)
        if self.ready:
            self.since = time.monotonic()
        self.conn.send(chunk)

    def timeout(self, page_timeout):
        return page_timeout if self.ready else STARTUP_TIMEOUT

    def stop(self, kill=False):
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(timeout=None if kill else 5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _death_reason(exitcode):
    if exitcode is not None and exitcode < 0:
        return f"decoder crashed (signal {-exitcode})"
    return f"decoder crashed (exit status {exitcode})"


class PagePool:
    """`workers` forked processes that run `function` (picklable) over the jobs of `imap`."""

    def __init__(self, function, workers, page_timeout=60.0, max_ahead=1024):
        self.function, self.page_timeout, self.max_ahead = function, page_timeout, max_ahead
        self._workers = [_Worker(multiprocessing.get_context("fork"), function)
                         for _ in range(workers)]
        self._replacements = None  # the forkserver context, from the first death on
        self.deaths = 0

    def pids(self):
        return [worker.process.pid for worker in self._workers]

    def close(self):
        for worker in self._workers:
            worker.stop(kill=bool(worker.held))
        self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def imap(self, jobs):
        """Yields (function(job), None) or (None, why the job has no result), in job order."""
        try:
            yield from self._imap(jobs)
        finally:
            # Stopped early (an error, the caller gave up): answers still under way belong to
            # no one, so their workers are replaced.
            for worker in [worker for worker in self._workers if worker.held]:
                self._restart(worker)

    def _imap(self, jobs):
        todo = collections.deque(enumerate(jobs))
        retried, done, next_index = set(), {}, 0
        deaths_in_a_row = 0
        total = len(todo)
        while next_index < total:
            if next_index in done:
                yield done.pop(next_index)
                next_index += 1
                continue
            for worker in self._workers:
                if not worker.held and todo and todo[0][0] < next_index + self.max_ahead:
                    chunk = [todo.popleft()]
                    # A retried page goes alone, so a second crash is surely its own.
                    while (chunk[0][0] not in retried and todo and len(chunk) < _CHUNK
                           and todo[0][0] not in retried):
                        chunk.append(todo.popleft())
                    worker.give(chunk)
            busy = [worker for worker in self._workers if worker.held]
            if not busy:
                continue
            deadline = min(worker.since + worker.timeout(self.page_timeout) for worker in busy)
            waitables = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            ready = set(connection.wait(waitables, timeout=max(0.0, deadline - time.monotonic())))
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    received = self._receive(worker, done)
                    deaths_in_a_row = 0 if received else deaths_in_a_row
                if worker.process.sentinel in ready:
                    deaths_in_a_row += 1
                    self.deaths += 1
                    worker.process.join()  # reaps it: the exit code is known from here on
                    reason = _death_reason(worker.process.exitcode)
                    if deaths_in_a_row >= MAX_DEATHS_IN_A_ROW:
                        raise WorkersKeepDying(
                            f"{deaths_in_a_row} decoding workers died in a row without finishing "
                            f"a page (last: {reason}); is the machine out of memory?")
                    self._replace(worker, todo, done, retried, reason, retry=True)
                elif worker.held and time.monotonic() - worker.since > worker.timeout(
                        self.page_timeout):
                    if worker.ready:
                        reason = f"decoding took longer than --page_timeout={self.page_timeout:g} s"
                        self._replace(worker, todo, done, retried, reason, retry=False)
                    else:
                        raise WorkersKeepDying(f"a decoding worker did not start within "
                                               f"{STARTUP_TIMEOUT} s")

    @staticmethod
    def _receive(worker, done):
        """Collects the worker's answers; returns how many there were."""
        count = 0
        try:
            while worker.held and worker.conn.poll():
                message = worker.conn.recv()
                worker.since = time.monotonic()
                if message == _READY:
                    worker.ready = True
                    continue
                index, result = message
                assert index == worker.held[0][0]
                worker.held.popleft()
                done[index] = (result, None)
                count += 1
        except (EOFError, OSError):
            pass
        return count

    def _replace(self, worker, todo, done, retried, reason, retry):
        """Settles the page `worker` held, hands its other pages out again, starts a new one."""
        if worker.held:
            index, job = worker.held.popleft()
            if retry and index not in retried:
                retried.add(index)
                worker.held.appendleft((index, job))
            else:
                done[index] = (None, reason)
        todo.extendleft(reversed(worker.held))
        self._restart(worker)

    def _restart(self, worker):
        """Kills `worker` (what it held is dropped) and starts a replacement in its place."""
        worker.held.clear()
        worker.stop(kill=True)
        if self._replacements is None:
            self._replacements = multiprocessing.get_context("forkserver")
            # The function's module is imported once by the forkserver, not by each
            # replacement (multiprocessing runs `__main__` again in each: keep it light).
            module = getattr(getattr(self.function, "func", self.function), "__module__", None)
            self._replacements.set_forkserver_preload([module] if module else [])
        self._workers[self._workers.index(worker)] = _Worker(self._replacements, self.function)
