"""Orbax checkpoints of the train state {"step", "params", "opt_state"} under WORKDIR/checkpoints.

The data stream is a pure function of (config.seed, step), so the step is the whole data/RNG
state: restoring it makes a resumed run see exactly the batches an uninterrupted one would.
"""
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from anira_jax.errors import UserError


def manager(workdir: str, create: bool = True) -> ocp.CheckpointManager:
  """Keeps the latest two checkpoints; `create=False` to only read existing ones."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create)
  return ocp.CheckpointManager(directory, options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
  mngr.save(step, args=ocp.args.StandardSave(state), force=True)


def restore(mngr: ocp.CheckpointManager, like: Any, step: int | None = None) -> Any:
  """The checkpoint at `step` (default latest) shaped like `like`; None when there is none."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  mismatch = _mismatch(mngr, step, like)
  if mismatch:
    raise UserError(f"checkpoint {mngr.directory}/{step} holds a train state of other shapes "
                    f"({mismatch}): it was saved by another config or code version and is kept; "
                    "train this config in a new --workdir")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"checkpoint {mngr.directory}/{step} could not be read ({type(e).__name__}); "
                    "delete it to fall back to an earlier one, or retrain") from None


def _mismatch(mngr: ocp.CheckpointManager, step: int, like: Any) -> str | None:
  """The first leaf whose saved shape differs from like's, or which only one of them has; None
  when they agree or the checkpoint's metadata cannot be read (restoring then reports it)."""
  try:
    saved = ocp.tree.to_flat_dict(mngr.item_metadata(step))
  except Exception:  # pylint: disable=broad-except
    return None
  wanted = ocp.tree.to_flat_dict(like)
  shape = lambda leaf: "none" if leaf is None else tuple(leaf.shape)
  for key in sorted(set(saved) | set(wanted)):
    if shape(saved.get(key)) != shape(wanted.get(key)):
      return (f"{'.'.join(map(str, key))}: saved {shape(saved.get(key))}, this config "
              f"{shape(wanted.get(key))}")
  return None
