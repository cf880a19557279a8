"""A family is one module found by its name: a copy of sorting.py under a new `name`, with a copy
of configs/sorting.py, is all `tasks.get`, the shared checks, `tasks show`/`build` and training
need.

The copy lives in a temporary directory added to the package's `__path__` (here by monkeypatch,
in the children by the few lines of BOOT), which is how a file in anira_jax/tasks/ is found.
"""
import json
import pathlib
import subprocess
import sys

import pytest

from anira_jax import tasks
from conftest import REPO, child_env, tiny_flags
from test_tasks_base import check_family

NAME = "sorting_copy"

# `python -c BOOT DIR MODULE ARGS...` runs `python -m MODULE ARGS...` with DIR in the package path.
BOOT = """
import runpy, sys
import anira_jax.tasks
anira_jax.tasks.__path__.append(sys.argv.pop(1))
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""


def _copy(source: pathlib.Path, target: pathlib.Path, old: str, new: str) -> None:
  text = source.read_text()
  assert text.count(old) == 1, f"{source} should hold {old!r} once"
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_text(text.replace(old, new))


@pytest.fixture(name="family")
def family_fixture(tmp_path, monkeypatch):
  """(directory holding the module sorting_copy.py, its config file) for the test's lifetime."""
  families, config = tmp_path / "families", tmp_path / "configs" / f"{NAME}.py"
  _copy(REPO / "anira_jax" / "tasks" / "sorting.py", families / f"{NAME}.py",
        'name = "sorting"', f'name = "{NAME}"')
  _copy(REPO / "configs" / "sorting.py", config, 'default("sorting"', f'default("{NAME}"')
  monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(families)])
  yield families, config
  for module in families.glob("*.py"):   # forget what the test imported from there
    sys.modules.pop(f"{tasks.__name__}.{module.stem}", None)
    vars(tasks).pop(module.stem, None)


def run(families: pathlib.Path, module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", BOOT, str(families), module, *args], cwd=REPO,
                        env=child_env(), capture_output=True, text=True, timeout=300)


def test_a_copied_family_needs_nothing_else(family, tmp_path):
  families, config = family
  assert NAME in tasks.names()
  assert tasks.get(NAME, num_values=6).vocab_size == 8
  check_family(NAME)

  shown = run(families, "anira_jax.tasks", "show", "--task", NAME, "--size", "4", "--count", "2")
  assert shown.returncode == 0, shown.stderr
  records = [json.loads(line) for line in shown.stdout.splitlines()]
  examples = tasks.get(NAME).examples(0, 4, 2)
  assert [(r["task"], r["problem"], r["answer"]) for r in records] == [
      (NAME, ex.problem, ex.answer) for ex in examples]

  data_dir = tmp_path / "tfds"
  built = run(families, "anira_jax.tasks", "build", "--task", NAME, "--sizes", "3,5", "--count",
              "4", "--data_dir", str(data_dir))
  assert built.returncode == 0, built.stderr
  metadata = json.loads((data_dir / f"anira_{NAME}" / "1.0.0" / "metadata.json").read_text())
  assert (metadata["task"], metadata["sizes"]) == (NAME, [3, 5])

  workdir = tmp_path / "run"   # test_main's tiny run: its compiled programs are shared
  trained = run(families, "anira_jax.main", f"--config={config}", f"--workdir={workdir}",
                *tiny_flags(train__steps=5, train__log_every=5))
  assert trained.returncode == 0, trained.stderr
  result = json.loads((workdir / "eval.json").read_text())
  assert (result["task"], result["step"]) == (NAME, 5)


def test_a_module_without_its_family_is_refused(family):
  families, _ = family
  (families / "stray.py").write_text("VALUE = 1\n")
  assert "stray" in tasks.names()
  with pytest.raises(ValueError, match=r"stray\.py must define one Task subclass with "
                                       r"name = 'stray'"):
    tasks.get("stray")
