"""Command line for the task families.

  python -m anira_jax.tasks show --task graph --size 6 --count 3 --seed 0
  python -m anira_jax.tasks build --task graph --sizes 4,8 --count 1000 --data_dir /tmp/tfds

`show` prints one JSON line per example: task, size, problem, answer, features (one value per
answer token) and feature_kinds. `build` writes the TFDS dataset anira_<task> (array_record,
one split size_<n> per size; see tfds_builder.py). Task knobs: `--option edge_prob=0.5`
(repeatable; the value is parsed as JSON, else kept as a string). Every size must satisfy the
task's minimum and seq_len(size) <= --max_len. Bad input: one line on stderr, exit status 2.
"""
import argparse
import json

from anira_jax import tasks


class _Parser(argparse.ArgumentParser):

  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {message}\n")


def _sizes(text: str) -> list[int]:
  try:
    return [int(s) for s in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _option(text: str) -> tuple[str, object]:
  key, eq, value = text.partition("=")
  if not key or not eq:
    raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
  try:
    return key, json.loads(value)
  except ValueError:
    return key, value


def _parser() -> _Parser:
  parser = _Parser(prog="python -m anira_jax.tasks", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  show = commands.add_parser("show", help="print examples as JSON lines")
  show.add_argument("--size", type=int, required=True)
  build = commands.add_parser("build", help="write a TFDS array_record dataset")
  build.add_argument("--sizes", type=_sizes, required=True, help="e.g. 4,8,16")
  build.add_argument("--data_dir", required=True)
  for sub in (show, build):
    sub.add_argument("--task", required=True, help=", ".join(tasks.names()))
    sub.add_argument("--count", type=int, default=1 if sub is show else 1000)
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--max_len", type=int, default=256)
    sub.add_argument("--option", type=_option, action="append", default=[])
  return parser


def _validate(args) -> tasks.Task:
  task = tasks.get(args.task, **dict(args.option))
  if args.count <= 0:
    raise ValueError(f"--count must be positive, got {args.count}")
  sizes = [args.size] if args.command == "show" else args.sizes
  if len(set(sizes)) != len(sizes):
    raise ValueError(f"duplicate sizes in {sizes}")
  for size in sizes:
    task.check_size(size)
    if task.seq_len(size) > args.max_len:
      raise ValueError(f"size {size} of {args.task!r} needs seq_len {task.seq_len(size)} > "
                       f"--max_len {args.max_len}")
  try:   # an --option of the wrong type only fails when an example is generated
    task.examples(args.seed, sizes[0], 1)
  except (TypeError, ValueError) as e:
    raise ValueError(f"bad --option for {args.task!r}: {e}") from None
  return task


def main(argv: list[str] | None = None) -> None:
  parser = _parser()
  args = parser.parse_args(argv)
  try:
    task = _validate(args)
  except ValueError as e:
    parser.error(str(e))
  if args.command == "show":
    for ex in task.examples(args.seed, args.size, args.count):
      print(json.dumps({"task": args.task, "size": args.size, "problem": ex.problem,
                        "answer": ex.answer, "features": ex.features,
                        "feature_kinds": dict(task.feature_kinds)}))
    return
  from anira_jax.tasks import tfds_builder      # lazy: only `build` needs TFDS
  tfds_builder.tfds.disable_progress_bar()
  try:
    path = tfds_builder.build(args.task, args.sizes, args.count, args.data_dir, args.seed,
                              dict(args.option))
  except OSError as e:
    parser.error(f"cannot write {args.data_dir}: {e}")
  print(f"wrote {tfds_builder.dataset_name(args.task)} splits "
        f"{', '.join(map(tfds_builder.split_name, args.sizes))} to {path}")


if __name__ == "__main__":
  main()
