"""Every entry point, handed a missing path, a path of the wrong kind or a malformed file, answers
in one line on stderr with a non-zero exit and no traceback, and changes nothing on disk."""
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, child_env, stderr_lines

pytestmark = pytest.mark.xdist_group("test_bad_input")   # one worker: module fixture runs once


@pytest.fixture(name="paths", scope="module")
def paths_fixture(tmp_path_factory, trained_run) -> pathlib.Path:
  """A trained run, copies of it with one file broken, and paths of the wrong kind."""
  root = tmp_path_factory.mktemp("bad_input")
  for name in ("run", "bad_config_json", "binary_eval", "bad_tokens"):
    shutil.copytree(trained_run("anira_o"), root / name)
  (root / "bad_config_json" / "config.json").write_text("{not json")
  (root / "binary_eval" / "eval.json").write_bytes(b"\xff\xfe\x00garbage")
  (root / "bad_tokens" / "tokens.npz").write_text("garbage")
  (root / "a_dir").mkdir()
  (root / "a_file").write_text("x")
  (root / "broken.py").write_text("def get_config(:\n")
  return root


MAIN = ["-m", "anira_jax.main"]
TINY_MAIN = [*MAIN, "--config=configs/sorting.py", "--config.train.steps=1",
             "--config.eval.generation=False"]
ANALYZE = ["-m", "anira_jax.analyze"]
CASES = [  # (id, arguments with {p} for the paths root, what stderr says)
    ("main-config-is-dir", [*MAIN, "--config={p}/a_dir", "--workdir={p}/new"], "is a directory"),
    ("main-config-not-python", [*MAIN, "--config={p}/a_file", "--workdir={p}/new"],
     "is not a Python file"),
    ("main-config-malformed", [*MAIN, "--config={p}/broken.py", "--workdir={p}/new"],
     "could not be loaded (SyntaxError"),
    ("main-workdir-is-file", [*TINY_MAIN, "--workdir={p}/a_file"], "Not a directory"),
    ("main-workdir-bad-config-json", [*TINY_MAIN, "--workdir={p}/bad_config_json"],
     "cannot read {p}/bad_config_json/config.json (JSONDecodeError"),
    ("evaluate-missing", ["-m", "anira_jax.evaluate", "--workdir={p}/nowhere"], "does not exist"),
    ("evaluate-workdir-is-file", ["-m", "anira_jax.evaluate", "--workdir={p}/a_file"],
     "is not a directory"),
    ("evaluate-no-run", ["-m", "anira_jax.evaluate", "--workdir={p}/a_dir"],
     "missing config.json"),
    ("evaluate-bad-config-json", ["-m", "anira_jax.evaluate", "--workdir={p}/bad_config_json"],
     "cannot read {p}/bad_config_json/config.json"),
    ("exits-no-run", ["-m", "anira_jax.exits", "--workdir={p}/a_dir"], "missing config.json"),
    ("analyze-workdir-is-file", [*ANALYZE, "--out={p}/out", "--workdirs={p}/a_file"],
     "is not a directory; pass the directory of a run"),
    ("analyze-eval-not-utf8", [*ANALYZE, "--out={p}/out", "--workdirs={p}/binary_eval"],
     "cannot read {p}/binary_eval/eval.json (UnicodeDecodeError"),
    ("analyze-bad-tokens", [*ANALYZE, "--out={p}/out", "--workdirs={p}/bad_tokens"],
     "cannot read {p}/bad_tokens/tokens.npz"),
    ("analyze-out-is-file", [*ANALYZE, "--out={p}/a_file", "--workdirs={p}/run"],
     "Not a directory"),
    ("reproduce-out-is-file", ["-m", "anira_jax.reproduce", "--scale=ci", "--out={p}/a_file"],
     "Not a directory"),
    ("ablation-out-is-dir", ["-m", "anira_jax.ablation", "--out={p}/a_dir",
                             "--workdir={p}/new"], "must be a file in an existing directory"),
    ("ablation-workdir-is-file", ["-m", "anira_jax.ablation", "--out={p}/new.md",
                                  "--workdir={p}/a_file", "--tasks=sorting",
                                  "--variants=anira_o", "--seeds=0", "--remedies=plain_ponder"],
     "Not a directory"),
    ("tasks-build-data-dir-is-file", ["-m", "anira_jax.tasks", "build", "--task=sorting",
                                      "--sizes=2", "--count=2", "--data_dir={p}/a_file"],
     "cannot write {p}/a_file"),
    ("tasks-show-bad-option", ["-m", "anira_jax.tasks", "show", "--task=sorting", "--size=2",
                               "--option=num_values=abc"], "bad --option for 'sorting'"),
    ("sweep-config-is-dir", ["launch/sweep.py", "--configs={p}/a_dir", "--dry_run"],
     "is a directory"),
    ("sweep-config-malformed", ["launch/sweep.py", "--configs={p}/broken.py", "--dry_run"],
     "could not be loaded (SyntaxError"),
]


def _tree(root: pathlib.Path) -> dict:
  return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
          for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("args,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_path_or_file_is_answered_in_one_line(paths, args, message):
  before = _tree(paths)
  proc = subprocess.run([sys.executable, *(a.format(p=paths) for a in args)], cwd=REPO,
                        env=child_env(), capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr
  lines = stderr_lines(proc)
  assert len(lines) == 1 and message.format(p=paths) in lines[0], proc.stderr
  assert _tree(paths) == before   # nothing written, nothing lost
