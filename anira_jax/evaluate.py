"""Evaluation through the inference (while_loop) path, per size, in and out of distribution.

python -m anira_jax.evaluate --workdir=DIR   reloads the latest checkpoint and rewrites eval.json.
"""
import json
import os
from typing import Callable, NamedTuple, Sequence

from absl import flags
import ml_collections
import numpy as np

from anira_jax import cli, data, model, runs, stats, tasks
from anira_jax.tasks.base import PAD

METRICS = ("token_accuracy", "sequence_accuracy", "mean_depth")
RANGES = ("in_distribution", "out_of_distribution")


def depth_summary(depth_BxL: np.ndarray, mask_BxL: np.ndarray, k_max: int) -> dict:
  """Mean, standard deviation and histogram (fractions at depths 1..K) over masked tokens."""
  d = depth_BxL[mask_BxL]
  hist = np.bincount(d, minlength=k_max + 1)[1:k_max + 1] / max(d.size, 1)
  return {"mean_depth": float(d.mean()), "depth_std": float(d.std()),
          "depth_hist": [round(float(x), 6) for x in hist]}


class Predictors(NamedTuple):
  own: runs.Predict      # the model's own halting
  forced: runs.Predict   # every token halting at a given iteration k
  generate: Callable | None = None   # greedy generation (runs.generator); None: not measured


def predictors(cfg: ml_collections.ConfigDict) -> Predictors:
  """The predictors evaluation runs (compiled once, reused at every evaluation)."""
  return Predictors(runs.predictor(cfg, "while"), runs.predictor(cfg, "while", forced=True),
                    runs.generator(cfg, "lockstep") if cfg.eval.generation else None)


def prompts_of(batch: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(prompts [B, P] right-padded, their lengths [B], answer lengths [B]) of a task batch: each
  row's tokens up to and including the SEP before its first answer token."""
  start_B = batch["loss_mask"].argmax(axis=1)
  lengths_B = start_B + 1
  prompts = np.where(np.arange(lengths_B.max())[None] < lengths_B[:, None],
                     batch["inputs"][:, :lengths_B.max()], PAD)
  return prompts.astype(np.int32), lengths_B.astype(np.int32), batch["loss_mask"].sum(axis=1)


def generation_right(params: model.Params, generate: Callable, sets: dict[int, dict]
                     ) -> dict[int, np.ndarray]:
  """Per size, whether greedy generation from each prompt gives the whole answer [B]. Prompts
  and answers are padded to one shape over the sizes: a single compile."""
  parts = {size: prompts_of(batch) for size, batch in sets.items()}
  width = max(p.shape[1] for p, _, _ in parts.values())
  new_tokens = int(max(a.max() for _, _, a in parts.values()))
  right = {}
  for size, (prompts, lengths, answer) in parts.items():
    out = generate(params, np.pad(prompts, ((0, 0), (0, width - prompts.shape[1]))), lengths,
                   new_tokens)
    tokens, batch = np.asarray(out["tokens"]), sets[size]
    right[size] = np.array([np.array_equal(row[:n], targets[mask]) for row, n, targets, mask
                            in zip(tokens, answer, batch["targets"], batch["loss_mask"])])
  return right


def predict_sets(params: model.Params, predict: Predictors, sets: dict[int, dict],
                 k_max: int, logits: bool = False,
                 sizes: Sequence[int] | None = None) -> dict[int, dict]:
  """Per size of `sizes` (default: every set's): greedy predictions and depths at the model's own
  depth ("pred", "depth"), and the predictions with every token forced to halt at k = 1..K
  ("forced_pred" [K, B, L]); with `logits`, also those forced outputs' logits ("forced_logits"
  [K, B, L, V]). Every set is padded to the longest of `sets`: a single compile, and the same
  numbers whichever sizes are asked for."""
  length = max(b["inputs"].shape[1] for b in sets.values())
  out = {}
  for size in sets if sizes is None else sizes:
    batch = sets[size]
    width = batch["inputs"].shape[1]
    inputs = np.pad(batch["inputs"], ((0, 0), (0, length - width)))
    logits_of = lambda res: np.asarray(res["logits"])[:, :width]
    own = predict.own(params, inputs)
    forced = [logits_of(predict.forced(params, inputs, np.int32(k))) for k in range(1, k_max + 1)]
    out[size] = {"pred": logits_of(own).argmax(-1), "depth": np.asarray(own["depth"])[:, :width],
                 "forced_pred": np.stack([f.argmax(-1) for f in forced]),
                 **({"forced_logits": np.stack(forced)} if logits else {})}
  return out


def needed_depth(forced_pred_KxBxL: np.ndarray, pred_BxL: np.ndarray) -> np.ndarray:
  """The oracle exit: the smallest forced depth k whose prediction equals the model's own
  prediction (0 where no forced depth gives it)."""
  same_KxBxL = forced_pred_KxBxL == pred_BxL[None]
  return np.where(same_KxBxL.any(axis=0), same_KxBxL.argmax(axis=0) + 1, 0)


def needed_summary(needed_BxL: np.ndarray, depth_BxL: np.ndarray, mask_BxL: np.ndarray,
                   k_max: int) -> dict:
  """Needed depth over the masked tokens some forced depth reproduces; the share none does."""
  matched = mask_BxL & (needed_BxL > 0)
  stats = depth_summary(needed_BxL, matched, k_max) if matched.any() else {
      "mean_depth": float("nan"), "depth_std": float("nan"), "depth_hist": [0.0] * k_max}
  waste = float((depth_BxL - needed_BxL)[matched].mean()) if matched.any() else float("nan")
  return {**{f"needed_{k}": v for k, v in stats.items()},
          "waste": waste, "unmatched": float(1.0 - matched.sum() / max(mask_BxL.sum(), 1))}


def evaluate(cfg: ml_collections.ConfigDict, task: tasks.Task, params: model.Params,
             predict: Predictors, sets: dict[int, dict]) -> tuple[dict, dict]:
  """(eval.json content, per-token records) on answer tokens, per size.

  Teacher-forced: a sequence counts as correct when every answer token is, which is exactly when
  greedy decoding reproduces the answer; with eval.generation, greedy generation checks it
  ("generation_sequence_accuracy"). Also the accuracy at each forced depth k = 1..K and the
  needed depth of every answer token (`needed_depth`)."""
  lo, hi = cfg.task.train_sizes
  predictions = predict_sets(params, predict, sets, cfg.model.k_max)
  generated = None if predict.generate is None else generation_right(params, predict.generate, sets)
  sizes = {}
  for size, batch in sets.items():
    mask, p = batch["loss_mask"], predictions[size]
    p["correct"] = p["pred"] == batch["targets"]
    p["forced_correct"] = p["forced_pred"] == batch["targets"][None]
    p["needed"] = needed_depth(p["forced_pred"], p["pred"])
    right, forced_right_KxBxL = p["correct"] | ~mask, p["forced_correct"] | ~mask[None]
    sizes[str(size)] = {
        "token_accuracy": float(right[mask].mean()),
        "sequence_accuracy": float(right.all(axis=1).mean()),
        **({} if generated is None else
           {"generation_sequence_accuracy": float(generated[size].mean())}),
        **depth_summary(p["depth"], mask, cfg.model.k_max),
        **needed_summary(p["needed"], p["depth"], mask, cfg.model.k_max),
        "forced_token_accuracy": [round(float(r[mask].mean()), 6) for r in forced_right_KxBxL],
        "forced_sequence_accuracy": [round(float(r.all(axis=1).mean()), 6)
                                     for r in forced_right_KxBxL],
        "in_distribution": bool(lo <= size <= hi),
    }
  records = token_records(sets, predictions, (lo, hi))
  result = {"task": task.name, "variant": cfg.model.variant, "sizes": sizes,
            "alignment": alignment(records, task.main_feature)}
  return result, records


def alignment(records: dict[str, np.ndarray], main_feature: str) -> dict:
  """Spearman of depth with needed depth (where some forced depth reproduces the prediction) and
  with the task's main feature, on in-distribution answer tokens."""
  inside = stats.select(records, records["in_distribution"])
  matched = inside["needed_depth"] > 0
  return {"spearman_needed": stats.spearman(inside["depth"][matched],
                                               inside["needed_depth"][matched]),
          "spearman_main": stats.spearman(inside["depth"], inside[f"feature/{main_feature}"]),
          "main_feature": main_feature}


def range_means(result: dict) -> dict:
  """Per-size metrics of one eval.json averaged over the sizes in, and out of, distribution."""
  return {r: {k: float(np.mean([m[k] for m in result["sizes"].values()
                                if m["in_distribution"] == (r == "in_distribution")]))
              for k in METRICS} for r in RANGES}


def token_records(sets: dict[int, dict], predictions: dict[int, dict],
                  train_sizes: tuple[int, int]) -> dict[str, np.ndarray]:
  """One row per answer token of `evaluate`'s predictions: size, example, position, depth,
  correct, needed_depth (0: no forced depth gives the own prediction), forced_correct [K] (right
  when forced to halt at 1..K), in_distribution, and every task feature under "feature/<name>"."""
  rows = {}
  for size, batch in sets.items():
    mask = batch["loss_mask"]
    example, position = np.nonzero(mask)
    columns = {
        "size": np.full(example.size, size), "example": example, "position": position,
        "depth": predictions[size]["depth"][mask],
        "correct": predictions[size]["correct"][mask],
        "needed_depth": predictions[size]["needed"][mask],
        "forced_correct": predictions[size]["forced_correct"][:, mask].T,
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
  """eval.json and tokens.npz of a run directory (the latest evaluation), and the evaluation
  appended to evals.jsonl (the history; an evaluation replaces those of its step and later)."""
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump({"step": step, **result}, f, indent=1)
  np.savez_compressed(os.path.join(workdir, "tokens.npz"), **records)
  history = os.path.join(workdir, "evals.jsonl")
  kept = []
  if os.path.exists(history):
    with open(history) as f:
      kept = [line for line in f if json.loads(line)["step"] < step]
  with open(history, "w") as f:
    f.writelines(kept + [json.dumps({"step": step, **result}) + "\n"])


def evaluate_run(workdir: str) -> dict:
  run = runs.load_run(workdir)
  result, records = evaluate(run.config, run.task, run.params, predictors(run.config),
                             data.eval_sets(run.config, run.task))
  write(workdir, run.step, result, records)
  return result


def main(argv: list[str]) -> None:
  del argv
  cli.require_workdir(_WORKDIR.value)
  result = evaluate_run(_WORKDIR.value)
  print("\n".join(cli.result_lines(result)))
  print(os.path.join(_WORKDIR.value, "eval.json"))


if __name__ == "__main__":
  _WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.", required=True)
  cli.run(main)
