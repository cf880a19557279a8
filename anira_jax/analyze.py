"""The analysis of trained runs: accuracy and depth per size, alignment of depth with complexity.

python -m anira_jax.analyze --out=DIR --workdirs W1 W2 ...   (or --workdirs=W1,W2,...) writes
DIR/report.md, DIR/analysis.json and DIR/plots/*.png.

Runs are grouped by (task, variant); the seeds of a group are aggregated as mean and standard
deviation over seeds. Alignment is measured on in-distribution answer tokens: the Spearman
correlation of depth with every feature, with a bootstrap 95% interval of its mean over seeds
(tokens resampled within each run), and R^2 of linear fits of depth on the structural features,
the execution features, and both. Variants without adaptive depth have constant depth, so their
correlations and R^2 are 0 by definition.
"""
import json
import os
import platform
import shlex
import sys
import zipfile

from absl import flags
import jax
import numpy as np

from anira_jax import (checkpoint, cli, config as config_lib, evaluate, model, plots, runs,
                       stats, tasks)
from anira_jax.errors import UserError

# Runs of one (task, variant) are pooled over seeds; they may differ in these fields too.
POOLED = ("seed", *config_lib.CADENCE, *cli.EXECUTION)


def check_runs(groups: dict[str, list[dict]]) -> None:
  """Refuses a group whose runs' configs differ in more than POOLED, in one line naming the
  fields, values and workdirs; warns on stderr about a run whose eval.json is older than its
  latest checkpoint."""
  for key, group in groups.items():
    first = group[0]
    for run in group[1:]:
      changed = config_lib.differences(config_lib.with_schedule(first["config"]),
                                       config_lib.with_schedule(run["config"]))
      fields = [f"{k} {a!r} vs {b!r}" for k, a, b in changed if not config_lib.covered(k, POOLED)]
      if fields:
        raise UserError(f"runs of {key} differ in more than the seed, so they are not pooled: "
                        f"{first['workdir']} vs {run['workdir']}: {', '.join(fields)}; "
                        "analyse them in separate commands")
    for run in group:
      latest = checkpoint.manager(run["workdir"], create=False).latest_step()
      if latest is not None and latest > run["eval"]["step"]:
        print(f"warning: {run['workdir']}/eval.json is of step {run['eval']['step']}, its latest "
              f"checkpoint of step {latest}; python -m anira_jax.evaluate "
              f"--workdir={run['workdir']} updates it", file=sys.stderr)


def load(workdir: str) -> dict:
  """{"workdir", "config", "eval", "records"} of a run; UserError naming what is missing."""
  cli.require_workdir(workdir)
  cfg = runs.load_config(workdir)
  missing = [n for n in ("eval.json", "tokens.npz") if not os.path.isfile(os.path.join(workdir, n))]
  if missing:
    raise UserError(f"{workdir} is missing {' and '.join(missing)}; write "
                    f"{'them' if len(missing) > 1 else 'it'} with "
                    f"python -m anira_jax.evaluate --workdir={workdir}")
  rewrite = f"rewrite it with python -m anira_jax.evaluate --workdir={workdir}"
  result = cli.read_json(os.path.join(workdir, "eval.json"), rewrite)
  try:
    records = evaluate.load_records(workdir)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"cannot read {workdir}/tokens.npz ({type(e).__name__}); "
                    f"{rewrite}") from None
  if not records["in_distribution"].any():
    raise UserError(f"{workdir} has no evaluation size within task.train_sizes, where "
                    "alignment is measured; add one to task.eval_sizes and re-evaluate")
  if "needed_depth" not in records:
    raise UserError(f"{workdir}/tokens.npz has no needed depth (written by an older version); "
                    f"rewrite it with python -m anira_jax.evaluate --workdir={workdir}")
  history = os.path.join(workdir, "evals.jsonl")
  evals = []
  if os.path.isfile(history):
    with open(history) as f:
      evals = [json.loads(line) for line in f]
  return {"workdir": workdir, "config": cfg, "eval": result, "records": records, "evals": evals}


def label(cfg) -> str:
  """A group's name: the variant, and the depth of a fixed-depth baseline (`fixed_k4`)."""
  return cfg.model.variant if model.variant(cfg.model).adaptive else (
      f"{cfg.model.variant}_k{cfg.model.k_max}")


def mean_std(values: list[float]) -> dict:
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _concat(rows: list[dict], key: str) -> np.ndarray:
  return np.concatenate([r[key] for r in rows])


def group_summary(group: list[dict], resamples: int = 200) -> dict:
  """The numbers of one (task, variant) over its runs (seeds), which `check_runs` accepted."""
  cfg = group[0]["config"]
  task = tasks.get(cfg.task.name, **cfg.task.options)
  inside = [stats.select(r["records"], r["records"]["in_distribution"]) for r in group]
  outside = [stats.select(r["records"], ~r["records"]["in_distribution"]) for r in group]
  spearman = {}
  for name, kind in task.feature_kinds.items():
    pairs = [(r["depth"], r[f"feature/{name}"], stats.example_ids(r)) for r in inside]
    _, low, high = stats.mean_spearman_ci(pairs, resamples=resamples)
    per_seed = [stats.spearman(x, y) for x, y, _ in pairs]
    spearman[name] = {"kind": kind, "rho": mean_std(per_seed), "ci95": [low, high],
                      "per_seed": per_seed}
  regressions = [stats.regression(r, task.feature_kinds) for r in inside]
  ranges = [evaluate.range_means(r["eval"]) for r in group]
  hist = lambda depth: evaluate.depth_summary(depth, np.ones(depth.shape, bool),
                                              cfg.model.k_max)["depth_hist"]
  return {
      "task": task.name, "variant": cfg.model.variant, "label": label(cfg),
      "adaptive": model.variant(cfg.model).adaptive,
      "seeds": [int(r["config"].seed) for r in group], "workdirs": [r["workdir"] for r in group],
      "steps": [r["eval"]["step"] for r in group], "train_sizes": list(cfg.task.train_sizes),
      "k_max": cfg.model.k_max, "main_feature": task.main_feature,
      "feature_kinds": dict(task.feature_kinds),
      "sizes": {size: {"in_distribution": m["in_distribution"],
                       **{k: mean_std([r["eval"]["sizes"][size][k] for r in group])
                          for k in evaluate.METRICS}}
                for size, m in group[0]["eval"]["sizes"].items()},
      **{rng: {k: mean_std([x[rng][k] for x in ranges]) for k in evaluate.METRICS}
         for rng in evaluate.RANGES},
      "spearman": spearman,
      "regression": {k: mean_std([x[k] for x in regressions]) for k in regressions[0]},
      "depth_by_feature": {"feature": task.main_feature, **stats.depth_by_value(
          _concat(inside, "depth"), _concat(inside, f"feature/{task.main_feature}"))},
      "depth_hist": {"in_distribution": hist(_concat(inside, "depth")),
                     "out_of_distribution": hist(_concat(outside, "depth"))},
      "needed": needed_summary(group, inside, resamples),
      "forced": {size: {k: np.mean([r["eval"]["sizes"][size][k] for r in group], axis=0).tolist()
                        for k in ("forced_token_accuracy", "forced_sequence_accuracy")}
                 for size in group[0]["eval"]["sizes"]},
      "history": history(group),
  }


def needed_summary(group: list[dict], inside: list[dict], resamples: int) -> dict:
  """Needed depth on in-distribution answer tokens that some forced depth reproduces: its
  distribution, the waste (own - needed), Spearman(own, needed) with a bootstrap interval over
  examples, and the in-distribution sequence accuracy at each forced depth."""
  k_max = group[0]["config"].model.k_max
  matched = [stats.select(r, r["needed_depth"] > 0) for r in inside]
  pairs = [(r["depth"], r["needed_depth"], stats.example_ids(r)) for r in matched]
  rho, low, high = stats.mean_spearman_ci(pairs, resamples=resamples)
  per_run = lambda fn: mean_std([fn(r) for r in matched])
  forced = [np.mean([m["forced_sequence_accuracy"] for m in r["eval"]["sizes"].values()
                     if m["in_distribution"]], axis=0) for r in group]
  return {
      "spearman": {"rho": mean_std([stats.spearman(x, y) for x, y, _ in pairs]),
                   "ci95": [low, high], "mean_of_seeds": rho},
      "mean": per_run(lambda r: float(r["needed_depth"].mean())),
      "std": per_run(lambda r: float(r["needed_depth"].std())),
      "own_mean": per_run(lambda r: float(r["depth"].mean())),
      "waste": per_run(lambda r: float((r["depth"] - r["needed_depth"]).mean())),
      "unmatched": mean_std([1.0 - m["depth"].size / r["depth"].size
                             for m, r in zip(matched, inside)]),
      "hist": evaluate.depth_summary(_concat(matched, "needed_depth"),
                                     np.ones(_concat(matched, "depth").shape, bool),
                                     k_max)["depth_hist"],
      "own_by_needed": stats.depth_by_value(_concat(matched, "depth"),
                                               _concat(matched, "needed_depth")),
      "forced_sequence_accuracy": {"mean": np.mean(forced, axis=0).tolist(),
                                   "std": np.std(forced, axis=0).tolist()},
  }


def history(group: list[dict]) -> dict:
  """Alignment at each evaluation during training (evals.jsonl), mean over the runs that have
  it at that step."""
  steps = sorted({e["step"] for r in group for e in r["evals"] if "alignment" in e})
  at = lambda step, key: [e["alignment"][key] for r in group for e in r["evals"]
                          if e["step"] == step and "alignment" in e]
  return {"steps": steps,
          **{key: [float(np.mean(at(s, key))) for s in steps]
             for key in ("spearman_needed", "spearman_main")}}


def analyze(workdirs: list[str], resamples: int = 200) -> dict:
  """{"groups": {"<task>/<variant>": group_summary}} of the runs in workdirs."""
  groups: dict[str, list[dict]] = {}
  for workdir in workdirs:
    run = load(workdir)
    groups.setdefault(f"{run['config'].task.name}/{label(run['config'])}", []).append(run)
  check_runs(groups)
  return {"groups": {key: group_summary(group, resamples)
                     for key, group in sorted(groups.items())}}


def machine() -> dict:
  return {"platform": platform.platform(), "cpus": os.cpu_count(),
          "python": platform.python_version(), "jax": jax.__version__,
          "devices": f"{jax.device_count()} x {jax.devices()[0].platform}"}


def header(title: str, command: str) -> str:
  m = machine()
  return (f"# {title}\n\nGenerated by `{command}` on {m['platform']}, {m['cpus']} CPUs, "
          f"Python {m['python']}, jax {m['jax']} ({m['devices']}).\n")


def _ms(x: dict, digits: int = 3) -> str:
  """mean ± std; just the mean when the std is 0 (one seed)."""
  return f"{x['mean']:.{digits}f}" + (f" ± {x['std']:.{digits}f}" if x["std"] else "")


def markdown(result: dict, plot_files: list[str]) -> str:
  """The report's sections after its header."""
  groups = result["groups"]
  lines = ["", "## Runs", "", "| task | variant | seeds | steps | train sizes |",
           "| --- | --- | --- | --- | --- |"]
  lines += [f"| {g['task']} | {g['label']} | {g['seeds']} | {sorted(set(g['steps']))} | "
            f"{g['train_sizes'][0]}–{g['train_sizes'][1]} |" for g in groups.values()]
  lines += ["", ("Numbers are mean ± standard deviation over seeds (the mean alone for one "
                 "seed). Alignment uses in-distribution answer tokens; intervals are bootstrap 95% "
                 "intervals of the mean over seeds. `fixed` and `transformer` run every token "
                 "`k_max` iterations, so their depth is constant and its correlations and R² are "
                 "0 by definition.")]
  for task in sorted({g["task"] for g in groups.values()}):
    group = {g["label"]: g for g in groups.values() if g["task"] == task}
    first = next(iter(group.values()))
    lines += ["", f"## {task}", "", "### Accuracy and depth per size", "",
              "| variant | size | | token accuracy | sequence accuracy | mean depth |",
              "| --- | --- | --- | --- | --- | --- |"]
    for variant, g in group.items():
      lines += [f"| {variant} | {size} | {'in' if m['in_distribution'] else '**out**'} | "
                f"{_ms(m['token_accuracy'])} | {_ms(m['sequence_accuracy'])} | "
                f"{_ms(m['mean_depth'], 2)} |" for size, m in g["sizes"].items()]
    lines += ["", "### Spearman(depth, feature), in-distribution answer tokens", "",
              "| feature | kind | " + " | ".join(group) + " |",
              "| --- | --- | " + " | ".join("---" for _ in group) + " |"]
    for name, kind in first["feature_kinds"].items():
      cells = [f"{_ms(g['spearman'][name]['rho'], 2)} [{g['spearman'][name]['ci95'][0]:.2f}, "
               f"{g['spearman'][name]['ci95'][1]:.2f}]" if g["adaptive"] else "0 (constant)"
               for g in group.values()]
      main = " (main)" if name == first["main_feature"] else ""
      lines.append(f"| {name}{main} | {kind} | " + " | ".join(cells) + " |")
    lines += ["", "### R² of depth on feature groups, in-distribution answer tokens", "",
              "| variant | structural | execution | both | added by execution |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {variant} | " + " | ".join(_ms(g["regression"][k]) for k in (
        "r2_structural", "r2_execution", "r2_both", "r2_execution_added")) + " |"
              for variant, g in group.items() if g["adaptive"]]
    lines += needed_markdown(group)
  if plot_files:
    lines += ["", "## Plots", ""] + [f"![{os.path.splitext(p)[0]}](plots/{p})" for p in plot_files]
  return "\n".join(lines) + "\n"


def needed_markdown(group: dict[str, dict]) -> list[str]:
  """The needed-depth tables of one task: what the model needs against what it spends, and the
  in-distribution sequence accuracy when every token is forced to halt at k."""
  k_max = max(g["k_max"] for g in group.values())
  lines = ["", "### Needed depth (oracle exit), in-distribution answer tokens", "",
           "Needed depth: the smallest forced depth k (every token halts at k) whose prediction "
           "equals the model's own; waste = own depth - needed depth. Intervals resample "
           "examples.", "",
           "| variant | own depth | needed depth (mean, std) | waste | Spearman(own, needed) | "
           "not reproduced by any k |", "| --- | --- | --- | --- | --- | --- |"]
  for name, g in group.items():
    n = g["needed"]
    rho = (f"{_ms(n['spearman']['rho'], 2)} [{n['spearman']['ci95'][0]:.2f}, "
           f"{n['spearman']['ci95'][1]:.2f}]" if g["adaptive"] else "0 (constant)")
    lines.append(f"| {name} | {_ms(n['own_mean'], 2)} | {_ms(n['mean'], 2)}, "
                 f"{_ms(n['std'], 2)} | {_ms(n['waste'], 2)} | {rho} | {_ms(n['unmatched'])} |")
  lines += ["", "In-distribution sequence accuracy with every token forced to halt at k:", "",
            "| variant | " + " | ".join(f"k={k}" for k in range(1, k_max + 1)) + " |",
            "| --- | " + " | ".join("---" for _ in range(k_max)) + " |"]
  for name, g in group.items():
    acc = g["needed"]["forced_sequence_accuracy"]["mean"]
    lines.append(f"| {name} | " + " | ".join(f"{a:.3f}" for a in acc)
                 + " | " * (k_max - len(acc)) + " |")
  return lines


def write(out: str, result: dict, head: str) -> None:
  """out/analysis.json, out/plots/*.png and out/report.md (head, then the sections)."""
  os.makedirs(os.path.join(out, "plots"), exist_ok=True)
  with open(os.path.join(out, "analysis.json"), "w") as f:
    json.dump(result, f, indent=1)
  plot_files = plots.write(result["groups"], os.path.join(out, "plots"))
  with open(os.path.join(out, "report.md"), "w") as f:
    f.write(head + markdown(result, plot_files))


def main(argv: list[str]) -> None:
  workdirs = _WORKDIRS.value + argv[1:]   # --workdirs W1 W2 ... leaves W2 ... as arguments
  result = {"machine": machine(), **analyze(workdirs, _RESAMPLES.value)}
  command = shlex.join(["python", "-m", "anira_jax.analyze", *sys.argv[1:]])
  write(_OUT.value, result, header("Analysis", command))
  print(os.path.join(_OUT.value, "report.md"))


if __name__ == "__main__":
  _WORKDIRS = flags.DEFINE_list("workdirs", None, "Run directories to analyse.", required=True)
  _OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
  _RESAMPLES = flags.DEFINE_integer("resamples", 200, "Bootstrap resamples.")
  cli.run(main)
