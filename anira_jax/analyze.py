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

from anira_jax import (analysis, checkpoint, cli, config as config_lib, evaluate, model, plots,
                       runs, tasks)

# Runs of one (task, variant) are pooled over seeds; they may differ in these fields too.
POOLED = ("seed", "train.log_every", "train.eval_every", "train.checkpoint_every", "parallel.")


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
        raise cli.UserError(f"runs of {key} differ in more than the seed, so they are not pooled: "
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
  if not os.path.isdir(workdir):
    raise cli.UserError(f"workdir {workdir!r} does not exist; train a run there with "
                        f"python -m anira_jax.main --config=configs/<task>.py --workdir={workdir}")
  cfg = runs.load_config(workdir)
  missing = [n for n in ("eval.json", "tokens.npz") if not os.path.isfile(os.path.join(workdir, n))]
  if missing:
    raise cli.UserError(f"{workdir} is missing {' and '.join(missing)}; write "
                        f"{'them' if len(missing) > 1 else 'it'} with "
                        f"python -m anira_jax.evaluate --workdir={workdir}")
  rewrite = f"rewrite it with python -m anira_jax.evaluate --workdir={workdir}"
  result = cli.read_json(os.path.join(workdir, "eval.json"), rewrite)
  try:
    records = evaluate.load_records(workdir)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise cli.UserError(f"cannot read {workdir}/tokens.npz ({type(e).__name__}); "
                        f"{rewrite}") from None
  if not records["in_distribution"].any():
    raise cli.UserError(f"{workdir} has no evaluation size within task.train_sizes, where "
                        "alignment is measured; add one to task.eval_sizes and re-evaluate")
  return {"workdir": workdir, "config": cfg, "eval": result, "records": records}


def mean_std(values: list[float]) -> dict:
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _concat(rows: list[dict], key: str) -> np.ndarray:
  return np.concatenate([r[key] for r in rows])


def group_summary(group: list[dict], resamples: int = 200) -> dict:
  """The numbers of one (task, variant) over its runs (seeds)."""
  cfg = group[0]["config"]
  shape = lambda c: (tuple(c.task.train_sizes), tuple(c.task.eval_sizes), c.model.k_max)
  if any(shape(r["config"]) != shape(cfg) for r in group):
    raise cli.UserError(f"runs of {cfg.task.name}/{cfg.model.variant} differ in task.train_sizes, "
                        f"task.eval_sizes or model.k_max: {[r['workdir'] for r in group]}")
  task = tasks.get(cfg.task.name, **cfg.task.options)
  inside = [analysis.select(r["records"], r["records"]["in_distribution"]) for r in group]
  outside = [analysis.select(r["records"], ~r["records"]["in_distribution"]) for r in group]
  spearman = {}
  for name, kind in task.feature_kinds.items():
    pairs = [(r["depth"], r[f"feature/{name}"]) for r in inside]
    _, low, high = analysis.mean_spearman_ci(pairs, resamples=resamples)
    per_seed = [analysis.spearman(x, y) for x, y in pairs]
    spearman[name] = {"kind": kind, "rho": mean_std(per_seed), "ci95": [low, high],
                      "per_seed": per_seed}
  regressions = [analysis.regression(r, task.feature_kinds) for r in inside]
  ranges = [evaluate.range_means(r["eval"]) for r in group]
  hist = lambda depth: evaluate.depth_summary(depth, np.ones(depth.shape, bool),
                                              cfg.model.k_max)["depth_hist"]
  return {
      "task": task.name, "variant": cfg.model.variant,
      "adaptive": cfg.model.variant in model.ADAPTIVE,
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
      "depth_by_feature": {"feature": task.main_feature, **analysis.depth_by_value(
          _concat(inside, "depth"), _concat(inside, f"feature/{task.main_feature}"))},
      "depth_hist": {"in_distribution": hist(_concat(inside, "depth")),
                     "out_of_distribution": hist(_concat(outside, "depth"))},
  }


def analyze(workdirs: list[str], resamples: int = 200) -> dict:
  """{"groups": {"<task>/<variant>": group_summary}} of the runs in workdirs."""
  groups: dict[str, list[dict]] = {}
  for workdir in workdirs:
    run = load(workdir)
    groups.setdefault(f"{run['config'].task.name}/{run['config'].model.variant}", []).append(run)
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
  lines += [f"| {g['task']} | {g['variant']} | {g['seeds']} | {sorted(set(g['steps']))} | "
            f"{g['train_sizes'][0]}–{g['train_sizes'][1]} |" for g in groups.values()]
  lines += ["", ("Numbers are mean ± standard deviation over seeds (the mean alone for one "
                 "seed). Alignment uses in-distribution answer tokens; intervals are bootstrap 95% "
                 "intervals of the mean over seeds. `fixed` and `transformer` run every token "
                 "`k_max` iterations, so their depth is constant and its correlations and R² are "
                 "0 by definition.")]
  for task in sorted({g["task"] for g in groups.values()}):
    group = {g["variant"]: g for g in groups.values() if g["task"] == task}
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
  if plot_files:
    lines += ["", "## Plots", ""] + [f"![{os.path.splitext(p)[0]}](plots/{p})" for p in plot_files]
  return "\n".join(lines) + "\n"


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
