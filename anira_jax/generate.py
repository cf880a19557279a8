"""Watch a trained run think: generate answers to fresh problems and show each token's depth.

python -m anira_jax.generate --workdir=DIR --size=N [--count=K] [--seed=S] [--json]

prints each problem, the answer the model generates (greedy, `Run.generate`) in the task's own
symbols with the block applications that produced each token, the expected answer and whether
they agree; --json prints one JSON object instead.
"""
import json

from absl import flags
import numpy as np

from anira_jax import cli, errors, runs
from anira_jax.tasks.base import SEP


def generate(run: runs.Run, size: int, count: int, seed: int) -> dict:
  """`count` problems of `size` (a pure function of `seed`) and what the run generates for them:
  {"size", "examples": [{"problem", "expected", "generated", "depth", "right"}],
  "sequence_accuracy", "mean_depth"} (depth: block applications of the position that produced
  each token)."""
  if count < 1:
    raise errors.UserError(f"--count must be positive, got {count}")
  try:
    examples = run.task.examples(seed, size, count)
  except ValueError as e:
    raise errors.UserError(f"{e}; choose another --size or --count") from None
  prompts = [np.array(ex.prompt_tokens + [SEP], np.int32) for ex in examples]
  longest = max(len(ex.answer_tokens) for ex in examples)
  try:
    out = run.generate(prompts, longest)
  except ValueError as e:
    raise errors.UserError(f"{e}; choose a smaller --size") from None
  shown = []
  for ex, tokens, depth in zip(examples, out["tokens"], out["depth"]):
    n = len(ex.answer_tokens)
    shown.append({"problem": ex.problem, "expected": ex.answer,
                  "generated": run.task.decode(tokens[:n]), "depth": depth[:n].tolist(),
                  "right": bool(np.array_equal(tokens[:n], ex.answer_tokens))})
  depths = np.concatenate([e["depth"] for e in shown])
  return {"size": size, "examples": shown,
          "sequence_accuracy": float(np.mean([e["right"] for e in shown])),
          "mean_depth": float(depths.mean())}


def render(result: dict, k_max: int) -> str:
  """The human-readable form of `generate`'s result."""
  lines = []
  for i, ex in enumerate(result["examples"]):
    lines += [f"problem {i}: {json.dumps(ex['problem'])}",
              "  generated: " + " ".join(f"{s}({d})" for s, d in zip(ex["generated"], ex["depth"])),
              f"  expected:  {' '.join(map(str, ex['expected']))}   "
              f"{'right' if ex['right'] else 'WRONG'}"]
  lines.append(f"size {result['size']}: {sum(e['right'] for e in result['examples'])}/"
               f"{len(result['examples'])} right, mean depth {result['mean_depth']:.2f} of "
               f"{k_max} (in parentheses: block applications per token)")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  cli.require_workdir(f.workdir)
  run = runs.load_run(f.workdir)
  seed = run.config.eval.seed if f.seed is None else f.seed
  result = generate(run, f.size, f.count, seed)
  print(json.dumps({"workdir": f.workdir, "step": run.step, "task": run.task.name,
                    "variant": run.config.model.variant, **result}) if f.json
        else render(result, run.config.model.k_max))


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Training run directory.", required=True)
  flags.DEFINE_integer("size", None, "Problem size (the task's difficulty).", required=True)
  flags.DEFINE_integer("count", 5, "Number of problems.")
  flags.DEFINE_integer("seed", None, "Seed of the problems (default: the run's eval.seed).")
  flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")
  cli.run(main)
