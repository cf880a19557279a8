"""Training batches made ahead of the training loop by worker processes, read in step order.

A batch is a pure function of (config, step) (`data.train_batch`, which makes only the rows asked
for), so workers share no state: worker i of n makes the batches of steps start + i, start + i + n,
..., and the loop reads them back in step order. The batches are therefore the same for any number
of workers, and a resumed run, whose stream starts at the resumed step, sees those of an
uninterrupted one.

Workers are processes, not threads: the task generators are many small NumPy calls that hold the GIL
most of the time, so threads add no generation throughput (docs/design.md, "Batches made ahead").
Each is a fresh `python -m anira_jax.pipeline` that imports only the data code (not JAX, nor the
caller's main module, as multiprocessing's spawn and forkserver would) and talks to the loop over a
socket pair. Workers ignore SIGINT and SIGTERM (a stop signal sent to the whole process group is the
training loop's to handle: it saves, then closes the workers) and end when the loop closes them or
when their end of the socket closes: the loop's process exited or died.
"""
import os
import pickle
import signal
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection, Pipe

import ml_collections

import anira_jax
from anira_jax import data, tasks


def local_batch(cfg: ml_collections.ConfigDict, task: tasks.Task, step: int, rows: slice) -> dict:
  """The rows of the global batch of `step` that this process feeds (made alone)."""
  return data.train_batch(cfg, task, step, rows)


def _worker(conn: Connection) -> None:
  """Receives (cfg, task, rows), then answers each step received with (step, batch, None) or
  (step, None, (error, traceback)); ends on None or when the loop's end of the socket closes."""
  try:
    cfg, task, rows = conn.recv()
    while (step := conn.recv()) is not None:
      try:
        reply = (step, local_batch(cfg, task, step, rows), None)
      except Exception as e:  # pylint: disable=broad-except
        reply = (step, None, (e, traceback.format_exc()))
      try:
        conn.send(reply)
      except (pickle.PicklingError, TypeError, AttributeError):   # an error that does not pickle
        conn.send((step, None, (RuntimeError(repr(reply[2][0])), reply[2][1])))
  except (EOFError, OSError):   # the loop's process is gone
    pass


def _ignore_stop_signals() -> None:
  """Run in the worker before it starts Python: ignored signals stay ignored across exec (and
  Python keeps an ignored SIGINT), so no stop reaches a worker however early it comes."""
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, signal.SIG_IGN)


def _start(cfg: ml_collections.ConfigDict, task: tasks.Task, rows: slice
           ) -> tuple[Connection, subprocess.Popen]:
  """A worker process and the loop's end of its socket."""
  mine, theirs = Pipe()
  root = os.path.dirname(os.path.dirname(os.path.abspath(anira_jax.__file__)))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  try:
    proc = subprocess.Popen([sys.executable, "-m", "anira_jax.pipeline", str(theirs.fileno())],
                            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
                            preexec_fn=_ignore_stop_signals)
  finally:
    theirs.close()
  mine.send((cfg, task, rows))
  return mine, proc


class Batches:
  """The local batches of steps start, start + 1, ... (`next`), made by `workers` processes with
  up to `prefetch` batches asked for ahead (0 workers: each made in the calling thread when
  asked for). Close it, or use it as a context manager, to stop the workers."""

  def __init__(self, cfg: ml_collections.ConfigDict, task: tasks.Task, start: int, rows: slice,
               workers: int = 0, prefetch: int = 2):
    self._cfg, self._task, self._rows = cfg, task, rows
    self._next = self._asked = start
    self._conns, self.processes = [], []
    self._closed = False
    if not workers:
      return
    try:
      for _ in range(workers):
        conn, proc = _start(cfg, task, rows)
        self._conns.append(conn)
        self.processes.append(proc)
      for _ in range(max(prefetch, 1)):
        self._ask()
    except BaseException:
      self.close()
      raise

  def _ask(self) -> None:
    self._conns[self._asked % len(self._conns)].send(self._asked)
    self._asked += 1

  def __iter__(self) -> "Batches":
    return self

  def __next__(self) -> dict:
    if self._closed:
      raise ValueError("the batches are closed")
    step = self._next
    if not self._conns:
      self._next += 1
      return local_batch(self._cfg, self._task, step, self._rows)
    i = step % len(self._conns)
    try:
      got, batch, error = self._conns[i].recv()
    except (EOFError, OSError):
      raise RuntimeError(f"data worker {i} ended (exit status {self.processes[i].wait()}) "
                         f"before it made the batch of step {step}") from None
    assert got == step, (got, step)
    if error is not None:
      exc, trace = error
      exc.add_note(f"raised in data worker {i}, making the batch of step {step}:\n{trace}")
      raise exc
    self._next += 1
    self._ask()
    return batch

  def close(self) -> None:
    """Stops the workers at once (the batches they are making are not needed)."""
    if self._closed:
      return
    self._closed = True
    for proc in self.processes:
      proc.kill()
    for proc in self.processes:
      proc.wait()
    for conn in self._conns:
      conn.close()

  def __enter__(self) -> "Batches":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self) -> None:
    self.close()


if __name__ == "__main__":
  _worker(Connection(int(sys.argv[1])))
