"""Generation time saved by halting: every token forced to K_max vs the model's own depth.

python benchmarks/generate.py --json [--workdir=DIR] [--config=configs/sorting.py]
          [--train_steps=300] [--batches=1,8,64] [--size=8] [--inputs=4] [--rounds=7]

Loads the run in --workdir; when it holds none, first trains --config (default anira_o on sorting)
for --train_steps steps there (default: a temporary directory). Then, in this process, times greedy
generation (`runs.generator`, the whole prefill and decode in one jitted call) of the answers to
--inputs fixed batches of prompts of --size (default: the largest training size), as many new
tokens as the answer has, at each batch size, schedule ("lockstep": a step waits for the deepest
row; "depthwise": each row at its own iteration) and compaction (off, or on: the block run only
on the prompt tokens still active in the prefill and on the rows still active at each lock-step
position), by the model with its own halting, against every token forced to K_max with the
lock-step schedule and no compaction (the dense baseline). After one
warm-up call per input, each of --rounds rounds times one pass over the inputs per mode, modes
interleaved; the median pass is the mode's time.

Prints one JSON line {"results": [{"batch", "schedule", "compaction",
"ideal_speedup" (K_max / mean depth of the generated tokens), "batch_ideal_speedup" (K_max / mean
over decode positions of the deepest row's depth: what lock-step batching can at best keep),
"realized_speedup" (time of the dense baseline / time with halting), "realized_over_ideal",
"realized_speedup_cpu" (the same from process CPU time), "fixed_share" (the part of the dense
time that does not grow with depth, from every token forced to 1 and to K_max iterations, time
linear in between: outside what the ideal counts), "tokens_per_s" (generated tokens per
second with halting), "mean_depth", "decode_iterations", "call_s", "dense_call_s", "compile_s",
"k_max", "prompt_len", "new_tokens", "d_model"}, ...]}.
"""
import functools
import statistics
import time

import jax
import numpy as np
from absl import flags
from early_exit import benchmark, define_flags, pass_seconds   # on sys.path: same directory

from anira_jax import cli, decoding, runs
from anira_jax.tasks.base import SEP


def prompt_batches(run: runs.Run, batch: int, size: int, count: int) -> tuple[list, int]:
  """`count` fixed batches (prompts [B, P], lengths [B]) of `size`, and the answer length."""
  batches, new_tokens = [], 0
  for i in range(count):
    examples = run.task.examples(10_000 + i, size, batch)
    prompts = [ex.prompt_tokens + [SEP] for ex in examples]
    lengths = np.array([len(p) for p in prompts], np.int32)
    padded = np.zeros((batch, lengths.max()), np.int32)
    for row, p in zip(padded, prompts):
      row[:len(p)] = p
    batches.append((jax.device_put(padded), jax.device_put(lengths)))
    new_tokens = max([new_tokens] + [len(ex.answer_tokens) for ex in examples])
  return batches, new_tokens


MODES = [(schedule, compact) for schedule in decoding.SCHEDULES for compact in (False, True)]


def time_batch(run: runs.Run, batch: int, size: int, num_inputs: int, rounds: int) -> list[dict]:
  """One row per schedule and compaction: generation with the model's halting against the dense
  baseline, every token forced to K_max under the lock-step schedule without compaction (the
  fastest there: compaction has nothing to skip)."""
  cfg, k_max = run.config, run.config.model.k_max
  params = jax.device_put(run.params)
  inputs, new_tokens = prompt_batches(run, batch, size, num_inputs)
  calls = {(schedule, compact): functools.partial(runs.generator(cfg, schedule, compact=compact),
                                                  params) for schedule, compact in MODES}
  dense = functools.partial(runs.generator(cfg, "lockstep", forced=True), params)
  calls = {s: lambda x, f=f: f(*x, new_tokens) for s, f in calls.items()}
  calls["dense"] = lambda x: dense(*x, new_tokens, np.int32(k_max))
  calls["depth1"] = lambda x: dense(*x, new_tokens, np.int32(1))
  compile_s, outputs = {}, {}
  for mode, call in calls.items():
    start = time.perf_counter()
    outputs[mode] = [jax.tree.map(np.asarray, call(x)) for x in inputs]   # warm-up
    compile_s[mode] = time.perf_counter() - start
  passes = {mode: [] for mode in calls}
  for _ in range(rounds):
    for mode, call in calls.items():
      passes[mode].append(pass_seconds(call, inputs))
  wall = {m: statistics.median(w for w, _ in p) for m, p in passes.items()}
  cpu = {m: statistics.median(c for _, c in p) for m, p in passes.items()}
  # Forced to 1 and to K_max, generation costs fixed + k * per_iteration if linear in k: the fixed
  # part (prefill and decode work that does not repeat per iteration, call overhead) is outside
  # the ideal, which counts iterations only.
  per_iteration = (wall["dense"] - wall["depth1"]) / (k_max - 1)
  fixed = wall["depth1"] - per_iteration
  rows = []
  for mode in MODES:
    depth_NxBxM = np.stack([o["depth"] for o in outputs[mode]])
    ideal = k_max / depth_NxBxM.mean()
    realized = wall["dense"] / wall[mode]
    rows.append({
        "batch": batch, "schedule": mode[0], "compaction": mode[1],
        "ideal_speedup": round(float(ideal), 3),
        "batch_ideal_speedup": round(float(k_max / depth_NxBxM.max(axis=1).mean()), 3),
        "realized_speedup": round(realized, 3), "realized_over_ideal": round(realized / ideal, 3),
        "realized_speedup_cpu": round(cpu["dense"] / cpu[mode], 3),
        "fixed_share": round(fixed / wall["dense"], 3),
        "tokens_per_s": round(num_inputs * batch * new_tokens / wall[mode], 1),
        "mean_depth": round(float(depth_NxBxM.mean()), 3),
        "decode_iterations": float(np.mean([int(o["decode_iterations"])
                                            for o in outputs[mode]])),
        "call_s": round(wall[mode] / num_inputs, 6),
        "dense_call_s": round(wall["dense"] / num_inputs, 6),
        "compile_s": round(compile_s[mode], 2), "k_max": k_max,
        "prompt_len": int(inputs[0][0].shape[1]), "new_tokens": new_tokens,
        "d_model": cfg.model.d_model})
  return rows


def main(argv: list[str]) -> None:
  del argv
  benchmark(time_batch, lambda r: (
      f"batch {r['batch']:>3} {r['schedule']:<9} {'compact' if r['compaction'] else 'dense':<7}"
      f" ideal {r['ideal_speedup']:.2f}x (batch "
      f"{r['batch_ideal_speedup']:.2f}x)  realized {r['realized_speedup']:.2f}x "
      f"({r['realized_over_ideal']:.2f} of ideal; fixed share {r['fixed_share']:.2f})  "
      f"{r['tokens_per_s']:.0f} tokens/s"),
      lambda v: v.adaptive)


if __name__ == "__main__":
  define_flags(batches=["1", "8", "64"], inputs=4, rounds=7)
  cli.run(main, flags_parser=cli.config_parser(flags.FLAGS["config"]))
