"""Data parallelism: one per-device step function, run by shard_map over a mesh or by pmap.

The per-device function sees its slice of the global batch and reduces across the "data" axis
itself (lax.pmean of gradients); the state is replicated. Multi-process runs feed each process's
slice of the global batch (shard_map only: pmap is refused with more than one process).
"""
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from anira_jax.errors import UserError

AXIS = "data"


def initialize(p: ml_collections.ConfigDict) -> None:
  """Joins a multi-process job per config.parallel (before any device is touched)."""
  if p.distributed == "auto":
    jax.distributed.initialize()
  elif p.distributed == "explicit":
    jax.distributed.initialize(p.coordinator_address, p.num_processes, p.process_id)


class DataParallel:
  """Places state and batches and runs `per_device_fn(state, batch) -> (state, out)`."""

  def __init__(self, mode: str, per_device_fn: Callable[[Any, Any], tuple[Any, Any]],
               devices: list[jax.Device] | None = None):
    """Runs over `devices` (default: every device of every process)."""
    if mode == "pmap" and jax.process_count() > 1:
      raise UserError(f"parallel.mode=pmap runs in one process only (jax.pmap over each "
                      f"process's devices would average gradients within a process); with "
                      f"{jax.process_count()} processes use parallel.mode=shard_map")
    self.mode = mode
    self.devices = jax.devices() if devices is None else devices
    self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
    if mode == "pmap":
      self._step = jax.pmap(per_device_fn, axis_name=AXIS, donate_argnums=0,
                            devices=self.local_devices)
    elif mode == "shard_map":
      self.mesh = jax.make_mesh((len(self.devices),), (AXIS,), devices=self.devices)
      self._replicated = NamedSharding(self.mesh, P())
      self._sharded = NamedSharding(self.mesh, P(AXIS))
      self._step = jax.jit(jax.shard_map(per_device_fn, mesh=self.mesh, in_specs=(P(), P(AXIS)),
                                         out_specs=P()), donate_argnums=0)
    else:
      raise ValueError(f"unknown parallel mode {mode!r}")

  def process_slice(self, global_batch_size: int) -> slice:
    """The rows of the global batch this process feeds."""
    per_process = global_batch_size // jax.process_count()
    return slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)

  def put_state(self, state: Any) -> Any:
    if self.mode == "pmap":  # a copy per local device on a leading axis (device_put_replicated,
      n = len(self.local_devices)  # which JAX 0.10 removed)
      stacked = NamedSharding(jax.sharding.Mesh(np.array(self.local_devices), (AXIS,)), P(AXIS))
      return jax.tree.map(lambda x: jax.device_put(np.stack([np.asarray(x)] * n), stacked), state)
    return jax.device_put(state, self._replicated)

  def get_state(self, state: Any) -> Any:
    """The replicated state as host NumPy arrays, without the device axis."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: np.asarray(x[0]), state)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)

  def put_batch(self, local_batch: dict) -> dict:
    if self.mode == "pmap":
      n = len(self.local_devices)
      return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), local_batch)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self._sharded, x), local_batch)

  def __call__(self, state: Any, batch: dict) -> tuple[Any, Any]:
    state, out = self._step(state, batch)
    if self.mode == "pmap":
      out = jax.tree.map(lambda x: x[0], out)
    return state, out
