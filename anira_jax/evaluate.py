"""Evaluation through the inference (while_loop) path, per size, in and out of distribution.

python -m anira_jax.evaluate --workdir=DIR   reloads the latest checkpoint and rewrites eval.json.
"""
import json
import os

from absl import flags
import ml_collections
import numpy as np

from anira_jax import cli, data, model, runs, tasks

METRICS = ("token_accuracy", "sequence_accuracy", "mean_depth")
RANGES = ("in_distribution", "out_of_distribution")


def depth_summary(depth_BxL: np.ndarray, mask_BxL: np.ndarray, k_max: int) -> dict:
  """Mean, standard deviation and histogram (fractions at depths 1..K) over masked tokens."""
  d = depth_BxL[mask_BxL]
  hist = np.bincount(d, minlength=k_max + 1)[1:k_max + 1] / max(d.size, 1)
  return {"mean_depth": float(d.mean()), "depth_std": float(d.std()),
          "depth_hist": [round(float(x), 6) for x in hist]}


def predict_sets(params: model.Params, predict: runs.Predict,
                 sets: dict[int, dict]) -> dict[int, dict]:
  """Greedy predictions and depths per size (sets padded to one length: a single compile)."""
  length = max(b["inputs"].shape[1] for b in sets.values())
  out = {}
  for size, batch in sets.items():
    width = batch["inputs"].shape[1]
    res = predict(params, np.pad(batch["inputs"], ((0, 0), (0, length - width))))
    out[size] = {"pred": np.asarray(res["logits"])[:, :width].argmax(-1),
                 "depth": np.asarray(res["depth"])[:, :width]}
  return out


def evaluate(cfg: ml_collections.ConfigDict, task: tasks.Task, params: model.Params,
             predict: runs.Predict, sets: dict[int, dict]) -> tuple[dict, dict]:
  """(eval.json content, per-token records) on answer tokens, per size.

  Teacher-forced: a sequence counts as correct when every answer token is, which is exactly when
  greedy decoding reproduces the answer."""
  lo, hi = cfg.task.train_sizes
  predictions = predict_sets(params, predict, sets)
  sizes = {}
  for size, batch in sets.items():
    mask = batch["loss_mask"]
    right = (predictions[size]["pred"] == batch["targets"]) | ~mask
    sizes[str(size)] = {
        "token_accuracy": float(right[mask].mean()),
        "sequence_accuracy": float(right.all(axis=1).mean()),
        **depth_summary(predictions[size]["depth"], mask, cfg.model.k_max),
        "in_distribution": bool(lo <= size <= hi),
    }
  result = {"task": task.name, "variant": cfg.model.variant, "sizes": sizes}
  return result, token_records(sets, predictions, (lo, hi))


def range_means(result: dict) -> dict:
  """Per-size metrics of one eval.json averaged over the sizes in, and out of, distribution."""
  return {r: {k: float(np.mean([m[k] for m in result["sizes"].values()
                                if m["in_distribution"] == (r == "in_distribution")]))
              for k in METRICS} for r in RANGES}


def token_records(sets: dict[int, dict], predictions: dict[int, dict],
                  train_sizes: tuple[int, int]) -> dict[str, np.ndarray]:
  """One row per answer token: size, example, position, depth, correct, in_distribution, and
  every task feature under "feature/<name>"."""
  rows = {}
  for size, batch in sets.items():
    mask = batch["loss_mask"]
    example, position = np.nonzero(mask)
    columns = {
        "size": np.full(example.size, size), "example": example, "position": position,
        "depth": predictions[size]["depth"][mask],
        "correct": (predictions[size]["pred"] == batch["targets"])[mask],
        "in_distribution": np.full(example.size, train_sizes[0] <= size <= train_sizes[1]),
        **{f"feature/{k}": v[mask] for k, v in batch["features"].items()}}
    for k, v in columns.items():
      rows.setdefault(k, []).append(v)
  return {k: np.concatenate(v) for k, v in rows.items()}


def load_records(workdir: str) -> dict[str, np.ndarray]:
  """The per-token records of a run's last evaluation (`tokens.npz`), as NumPy columns."""
  with np.load(os.path.join(workdir, "tokens.npz")) as f:
    return dict(f)


def write(workdir: str, step: int, result: dict, records: dict[str, np.ndarray]) -> None:
  """eval.json and tokens.npz of a run directory."""
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump({"step": step, **result}, f, indent=1)
  np.savez_compressed(os.path.join(workdir, "tokens.npz"), **records)


def evaluate_run(workdir: str) -> dict:
  run = runs.load_run(workdir)
  result, records = evaluate(run.config, run.task, run.params,
                             runs.predictor(run.config, "while"),
                             data.eval_sets(run.config, run.task))
  write(workdir, run.step, result, records)
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
