"""Command-line plumbing shared by every entry point: bad input gives one line and exit 2."""
import ast
import difflib
import hashlib
import importlib.util
import json
import os
import signal
import sys
from typing import Callable, NoReturn, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from anira_jax.errors import Stopped, UserError

EXIT_USAGE = 2
EXIT_REQUEUE = 75   # os.EX_TEMPFAIL: stopped by SIGTERM/SIGINT after a checkpoint; rerun to resume
EXIT_INTERRUPTED = 130   # 128 + SIGINT: Ctrl-C where nothing could be saved
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # holds configs/
DEFAULTS = "anira_jax/config.py"   # where every config key and its default is defined


def fail(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_USAGE)


def one_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def config_path(task: str) -> str:
  """The repository's config file of a task, whatever the current directory."""
  return os.path.join(REPO, "configs", f"{task}.py")


def load_config_file(path: str, arg: str = ""):
  """get_config(arg) of a config file, as `--config=path:arg` would give it; a one-line UserError
  when the file is missing, not Python, or fails to load."""
  if os.path.isdir(path):
    raise UserError(f"config file {path} is a directory; give a file such as configs/sorting.py")
  if not os.path.isfile(path):
    raise UserError(f"config file not found: {path} (relative to {os.getcwd()}; the "
                    f"repository's configs are in {os.path.join(REPO, 'configs')})")
  module_spec = importlib.util.spec_from_file_location("_anira_config", path)
  if module_spec is None:
    raise UserError(f"config file {path} is not a Python file (.py)")
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"config file {path} could not be loaded ({type(e).__name__}: "
                    f"{one_line(e)})") from None


def read_json(path: str, remedy: str):
  """The JSON content of a file; a one-line UserError ending in `remedy` when it cannot be read
  or is not JSON."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:   # ValueError: not JSON, or not UTF-8
    raise UserError(f"cannot read {path} ({type(e).__name__}: {one_line(e)}); {remedy}") from None


def _has_key(config, key: str) -> bool:
  for part in key.split("."):
    if not hasattr(config, "keys") or part not in config:
      return False
    config = config[part]
  return True


def config_keys(config, prefix: str = "") -> list[str]:
  """Every dotted key of a (nested) config, leaves and sub-configs alike."""
  keys = []
  for name in config.keys():
    keys.append(prefix + name)
    if hasattr(config[name], "keys"):
      keys += config_keys(config[name], f"{prefix}{name}.")
  return keys


def unknown_key(config, key: str) -> str:
  """The one-line message for a key `config` does not have: the closest valid key, and where the
  valid keys are."""
  close = difflib.get_close_matches(key, config_keys(config), n=1)
  hint = f"; did you mean {close[0]!r}?" if close else ""
  return f"unknown config key {key!r}{hint} (valid keys and their defaults: {DEFAULTS})"


def override(config, key: str, text: str) -> None:
  """Sets config.<key> from text, like --config.<key>=<text> (Python literal, else a string)."""
  if not _has_key(config, key):
    raise UserError(unknown_key(config, key))
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  try:
    node[leaf] = value
  except TypeError as e:
    raise UserError(f"bad value for {key}: {e}") from None


def _load_base(spec: str):
  path, _, arg = spec.partition(":")
  return load_config_file(path, arg)


def diagnose_config(argv: Sequence[str], error: BaseException) -> str:
  """One line explaining why --config, or one of its --config.key=value overrides, did not load."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return "missing --config=configs/<task>.py[:variant]"
  try:
    base = _load_base(spec)
  except Exception as e:  # pylint: disable=broad-except
    return one_line(e)
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      key = arg[len("--config."):].split("=", 1)[0]
      if not _has_key(base, key):
        return unknown_key(base, key)
  return one_line(error)


def config_parser(config_flag: flags.FlagHolder) -> Callable[[list[str]], list[str]]:
  """A flags parser for app.run that loads --config eagerly and reports errors in one line."""
  def parse(argv: list[str]) -> list[str]:
    try:
      rest = flags.FLAGS(argv)
      config = config_flag.value
      if config is None:
        raise UserError("no --config")
      config.keys()  # a file that failed to load only raises on first access
    except Exception as e:  # pylint: disable=broad-except
      fail(diagnose_config(argv, e))
    return rest
  return parse


def run(main: Callable[[list[str]], None],
        flags_parser: Callable[[list[str]], list[str]] | None = None) -> None:
  """app.run, but a UserError or OSError from `main` becomes one line on stderr and exit 2, a
  stop by a signal exit EXIT_REQUEUE, and Ctrl-C outside training exit EXIT_INTERRUPTED (no
  traceback)."""
  def guarded(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # keep library chatter (orbax) off the console
    try:
      main(argv)
    except (UserError, OSError) as e:   # OSError: a path of the wrong kind, a full disk
      fail(one_line(e))
    except Stopped as e:
      for signum in (signal.SIGTERM, signal.SIGINT):   # saved: a late signal must not cut the exit
        signal.signal(signum, signal.SIG_IGN)
      if str(e):
        print(f"stopped: {one_line(e)}", file=sys.stderr)
      sys.exit(EXIT_REQUEUE)
    except KeyboardInterrupt:
      print("interrupted", file=sys.stderr)
      sys.exit(EXIT_INTERRUPTED)
  if flags_parser is None:
    def flags_parser(argv: list[str]) -> list[str]:
      try:
        return flags.FLAGS(argv)
      except flags.Error as e:
        fail(one_line(e))
  app.run(guarded, flags_parser=flags_parser)


def require_workdir(path: str) -> None:
  """UserError unless `path` is an existing directory, saying how to get one."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"workdir {path!r} is not a directory; pass the directory of a run")
  if not os.path.isdir(path):
    raise UserError(f"workdir {path!r} does not exist; train a run there with python -m "
                    f"anira_jax.main --config=configs/<task>.py --workdir={path}")


def result_lines(result: dict) -> list[str]:
  """One line per evaluated size of an evaluation result (eval.json): sequence and token accuracy,
  mean depth ± std, needed depth ± std, and "(ood)" out of distribution."""
  return [f"size {size:>3}: seq_acc {m['sequence_accuracy']:.3f} "
          f"tok_acc {m['token_accuracy']:.3f} depth {m['mean_depth']:.2f}±{m['depth_std']:.2f} "
          f"needed {m['needed_mean_depth']:.2f}±{m['needed_depth_std']:.2f}"
          f"{'' if m['in_distribution'] else '  (ood)'}" for size, m in result["sizes"].items()]


def seeds(values: Sequence[str], flag: str = "seeds") -> list[int]:
  """The values of a list flag of seeds (--<flag>) as integers; UserError when one is not."""
  try:
    return [int(s) for s in values]
  except ValueError:
    raise UserError(f"--{flag} must be integers, got {','.join(values)}") from None


def file_stem(path: str) -> str:
  """`sorting` for configs/sorting.py (or configs/sorting.py:anira_e)."""
  return os.path.splitext(os.path.basename(path.partition(":")[0]))[0]


def config_stem(config_flag_name: str = "config") -> str:
  """`sorting` for --config=configs/sorting.py:anira_e."""
  return file_stem(config_flags.get_config_filename(flags.FLAGS[config_flag_name]))


# Overrides of how a run executes, not of what it trains (how it is spread over devices, fed and
# profiled, what it writes beside): left out of the default workdir's hash; a resumed run and the
# runs pooled by analyze may differ in them.
EXECUTION = ("parallel.", "train.data_workers", "train.prefetch", "train.profile_steps",
             "train.tensorboard")


def default_workdir(stem: str, variant: str, overrides: dict) -> str:
  """runs/<config>_<variant>, plus a short hash of the --config.<key> overrides when there are any
  (EXECUTION aside: where and how a run executes does not change it), so that runs of other
  overrides never share a directory."""
  kept = {k: v for k, v in overrides.items() if not k.startswith(EXECUTION)}
  name = f"{stem}_{variant}"
  if kept:
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
    name += f"_{digest[:8]}"
  return os.path.join("runs", name)
