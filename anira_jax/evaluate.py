"""Evaluation through the inference (while_loop) path, per size, in and out of distribution.

python -m anira_jax.evaluate --workdir=DIR   reloads the latest checkpoint and rewrites eval.json.
"""
import json
import os

from absl import flags
import ml_collections
import numpy as np

from anira_jax import cli, data, model, runs, tasks


def depth_summary(depth_BxL: np.ndarray, mask_BxL: np.ndarray, k_max: int) -> dict:
  """Mean, standard deviation and histogram (fractions at depths 1..K) over masked tokens."""
  d = depth_BxL[mask_BxL]
  hist = np.bincount(d, minlength=k_max + 1)[1:k_max + 1] / max(d.size, 1)
  return {"mean_depth": float(d.mean()), "depth_std": float(d.std()),
          "depth_hist": [round(float(x), 6) for x in hist]}


def evaluate(cfg: ml_collections.ConfigDict, task: tasks.Task, params: model.Params,
             predict: runs.Predict, sets: dict[int, dict]) -> dict:
  """Token and sequence accuracy and depth statistics on answer tokens, per size."""
  hi = cfg.task.train_sizes[1]
  length = max(b["inputs"].shape[1] for b in sets.values())
  sizes = {}
  for size, batch in sets.items():
    pad = ((0, 0), (0, length - batch["inputs"].shape[1]))
    out = predict(params, np.pad(batch["inputs"], pad))
    width = batch["inputs"].shape[1]
    pred = np.asarray(out["logits"])[:, :width].argmax(-1)
    depth = np.asarray(out["depth"])[:, :width]
    mask = batch["loss_mask"]
    right = (pred == batch["targets"]) | ~mask
    sizes[str(size)] = {
        "token_accuracy": float(right[mask].mean()),
        "sequence_accuracy": float(right.all(axis=1).mean()),
        **depth_summary(depth, mask, cfg.model.k_max),
        "in_distribution": bool(cfg.task.train_sizes[0] <= size <= hi),
    }
  return {"task": task.name, "variant": cfg.model.variant, "sizes": sizes}


def write(workdir: str, step: int, result: dict) -> None:
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump({"step": step, **result}, f, indent=1)


def evaluate_run(workdir: str) -> dict:
  run = runs.load_run(workdir)
  result = evaluate(run.config, run.task, run.params, runs.predictor(run.config, "while"),
                    data.eval_sets(run.config, run.task))
  write(workdir, run.step, result)
  return result


def main(argv: list[str]) -> None:
  del argv
  if not os.path.isdir(_WORKDIR.value):
    raise cli.UserError(f"workdir {_WORKDIR.value!r} does not exist")
  result = evaluate_run(_WORKDIR.value)
  for size, m in result["sizes"].items():
    print(f"size {size:>3}: seq_acc {m['sequence_accuracy']:.3f} "
          f"tok_acc {m['token_accuracy']:.3f} depth {m['mean_depth']:.2f}±{m['depth_std']:.2f}"
          f"{'' if m['in_distribution'] else '  (ood)'}")
  print(os.path.join(_WORKDIR.value, "eval.json"))


if __name__ == "__main__":
  _WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.", required=True)
  cli.run(main)
