"""Exit rules read from a trained run's outputs: how close can halting that watches the model's
own predictions come to the depth each token needs?

For the run's in-distribution evaluation sets, the output with every token forced to halt at
k = 1..K (as evaluation computes it, `evaluate.predict_sets`: the exits the needed-depth oracle
compares) is computed once.
A rule then picks each answer token's exit from what it has seen by then (exit t reads outputs
1..t only):
  confidence tau   the top probability reaches tau (CALM's softmax response, Schuster et al. 2022);
  patience p       the argmax has not changed over the last p + 1 exits (PABEE, Zhou et al. 2020);
  stability eps    KL(p_t || p_{t-1}) < eps (the exit criterion of Huginn, Geiping et al. 2025);
and "or" combinations; a token none of them stops exits at K. Each rule is scored as evaluation
scores the model's own halting: sequence accuracy (mean over sizes), depth, needed depth (the
smallest k whose output has the chosen prediction), waste and Spearman(depth, needed depth) over
answer tokens. The rules are applied after the fact: a token stopped early is not frozen for the
others, unlike a halted token in the model (the oracle's forced exits make the same assumption).

python -m anira_jax.exits --workdir=DIR [--json]   writes exits.json and exits.png into DIR.
"""
import json
import os
from typing import Callable

from absl import flags
import numpy as np

from anira_jax import cli, data, evaluate, runs, stats

# probs [K, N, V] of N answer tokens at every forced exit -> whether each exit may stop [K, N].
Rule = Callable[[np.ndarray], np.ndarray]


def confidence(tau: float) -> Rule:
  return lambda p_KxNxV: p_KxNxV.max(-1) >= tau


def patience(p: int) -> Rule:
  def stop(p_KxNxV: np.ndarray) -> np.ndarray:
    pred_KxN = p_KxNxV.argmax(-1)
    same_KxN = np.zeros(pred_KxN.shape, bool)
    for t in range(p, len(pred_KxN)):
      same_KxN[t] = np.all(pred_KxN[t - p:t] == pred_KxN[t], axis=0)
    return same_KxN
  return stop


def stability(eps: float) -> Rule:
  def stop(p_KxNxV: np.ndarray) -> np.ndarray:
    logp = np.log(np.maximum(p_KxNxV, 1e-30))
    kl_KxN = np.full(p_KxNxV.shape[:2], np.inf)
    kl_KxN[1:] = np.sum(p_KxNxV[1:] * (logp[1:] - logp[:-1]), axis=-1)
    return kl_KxN < eps
  return stop


def either(*rules: Rule) -> Rule:
  return lambda p_KxNxV: np.any([rule(p_KxNxV) for rule in rules], axis=0)


RULES: dict[str, Rule] = {
    **{f"confidence {tau}": confidence(tau) for tau in (0.8, 0.9, 0.95, 0.99)},
    **{f"patience {p}": patience(p) for p in (1, 2)},
    **{f"stability {eps}": stability(eps) for eps in (0.1, 0.03, 0.01)},
    **{f"patience {p} or confidence 0.9": either(patience(p), confidence(0.9)) for p in (1, 2)},
    **{f"stability {eps} or confidence 0.9": either(stability(eps), confidence(0.9))
       for eps in (0.1, 0.03)},
}


def exit_depth(stop_KxN: np.ndarray) -> np.ndarray:
  """The first exit (1..K) a rule allows, K where it allows none."""
  stop_KxN = stop_KxN.copy()
  stop_KxN[-1] = True
  return stop_KxN.argmax(axis=0) + 1


def softmax(logits_NxV: np.ndarray) -> np.ndarray:
  e = np.exp(logits_NxV - logits_NxV.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def forced_outputs(run: runs.Run, sets: dict[int, dict], sizes: list[int]) -> dict[int, dict]:
  """For each of `sizes`: probabilities [K, N, V] of the N answer tokens at every forced exit, the
  own halting's depth and prediction [N], the targets [N], each token's example [N] and the
  number of examples, as evaluation computes them on `sets` (`evaluate.predict_sets`)."""
  predictions = evaluate.predict_sets(run.params, evaluate.predictors(run.config), sets,
                                      run.config.model.k_max, logits=True, sizes=sizes)
  out = {}
  for size in sizes:
    mask, p = sets[size]["loss_mask"], predictions[size]
    out[size] = {"probs": softmax(p["forced_logits"][:, mask]), "own_depth": p["depth"][mask],
                 "own_pred": p["pred"][mask], "targets": sets[size]["targets"][mask],
                 "example": np.nonzero(mask)[0], "examples": len(mask)}
  return out


# Size's outputs -> (exit depth [N], prediction [N]) of every answer token.
Choice = Callable[[dict], tuple[np.ndarray, np.ndarray]]


def at_depth(depth_of: Callable[[dict], np.ndarray]) -> Choice:
  """Exit at depth_of(outputs), with the forced exit's prediction there."""
  def choose(o: dict) -> tuple[np.ndarray, np.ndarray]:
    d_N = depth_of(o)
    return d_N, np.take_along_axis(o["probs"].argmax(-1), (d_N - 1)[None], axis=0)[0]
  return choose


def score(outputs: dict[int, dict], choose: Choice) -> dict:
  """Accuracy and depth of the choice, over the sizes; needed depth, waste and Spearman over the
  tokens some forced exit reproduces, as evaluation reports them."""
  sizes, depth, needed = {}, [], []
  for size, o in outputs.items():
    d_N, pred_N = choose(o)
    wrong = np.unique(o["example"][pred_N != o["targets"]])
    sizes[str(size)] = {"sequence_accuracy": 1.0 - wrong.size / o["examples"],
                        "mean_depth": float(d_N.mean())}
    depth.append(d_N)
    needed.append(evaluate.needed_depth(o["probs"].argmax(-1), pred_N))
  depth_N, needed_N = np.concatenate(depth), np.concatenate(needed)
  matched = needed_N > 0
  return {"sequence_accuracy": float(np.mean([s["sequence_accuracy"] for s in sizes.values()])),
          "mean_depth": float(depth_N.mean()), "depth_std": float(depth_N.std()),
          "needed_mean_depth": float(needed_N[matched].mean()),
          "waste": float((depth_N - needed_N)[matched].mean()),
          "spearman_needed": stats.spearman(depth_N[matched], needed_N[matched]), "sizes": sizes}


def analyze(run: runs.Run) -> dict:
  """The run's own halting, every forced depth and every rule of RULES, scored on the
  in-distribution evaluation sets."""
  lo, hi = run.config.task.train_sizes
  sets = data.eval_sets(run.config, run.task)   # every size: evaluation's padded shape
  outputs = forced_outputs(run, sets, [n for n in sets if lo <= n <= hi])
  k_max = run.config.model.k_max
  rows = {"own halting": score(outputs, lambda o: (o["own_depth"], o["own_pred"]))}
  rows.update({f"forced {k}": score(outputs, at_depth(lambda o, k=k: np.full_like(o["own_depth"],
                                                                                  k)))
               for k in range(1, k_max + 1)})
  rows.update({name: score(outputs, at_depth(lambda o, rule=rule: exit_depth(rule(o["probs"]))))
               for name, rule in RULES.items()})
  return {"task": run.task.name, "variant": run.config.model.variant, "step": run.step,
          "k_max": k_max, "rules": rows}


def table(result: dict) -> str:
  lines = [f"{result['task']} {result['variant']} step {result['step']}: in-distribution answer "
           "tokens, each exit rule applied to the forced-depth outputs",
           f"{'rule':34s} {'seq acc':>7s} {'depth':>11s} {'needed':>6s} {'waste':>5s} "
           f"{'rho':>5s}  depth by size"]
  for name, r in result["rules"].items():
    by_size = " ".join(f"{s['mean_depth']:.2f}" for s in r["sizes"].values())
    lines.append(f"{name:34s} {r['sequence_accuracy']:7.3f} {r['mean_depth']:5.2f} ± "
                 f"{r['depth_std']:4.2f} {r['needed_mean_depth']:6.2f} {r['waste']:5.2f} "
                 f"{r['spearman_needed']:5.2f}  {by_size}")
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  """Left: sequence accuracy against mean depth, the forced depths as a curve, the own halting and
  every rule as points. Right: waste against Spearman(depth, needed depth) of the same points."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rules = result["rules"]
  fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
  forced = [rules[f"forced {k}"] for k in range(1, result["k_max"] + 1)]
  left.plot([r["mean_depth"] for r in forced], [r["sequence_accuracy"] for r in forced], "k.-",
            label="every token forced to k")
  shown = [name for name in rules if not name.startswith("forced")]
  colors = plt.get_cmap("tab20")(np.linspace(0, 1, len(shown)))
  for name, color in zip(shown, colors):
    r, own = rules[name], name == "own halting"
    style = {"marker": "*" if own else "o", "ms": 14 if own else 7, "color": color, "ls": ""}
    left.plot(r["mean_depth"], r["sequence_accuracy"], label=name, **style)
    right.plot(r["spearman_needed"], r["waste"], **style)
  left.set(xlabel="mean depth of answer tokens (block applications)",
           ylabel="in-distribution sequence accuracy")
  right.set(xlabel="Spearman(depth, needed depth)", ylabel="waste (depth - needed depth)")
  fig.suptitle(f"{result['task']} {result['variant']} (step {result['step']}): exit rules on the "
               "model's own outputs")
  fig.legend(loc="outside right center", fontsize=8)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  cli.require_workdir(f.workdir)
  result = analyze(runs.load_run(f.workdir))
  with open(os.path.join(f.workdir, "exits.json"), "w") as out:
    json.dump(result, out, indent=1)
  plot(result, os.path.join(f.workdir, "exits.png"))
  print(json.dumps(result) if f.json else table(result))


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Training run directory.", required=True)
  flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
  cli.run(main)
