"""The `python -m anira_jax.tasks` CLI (show, build, bad input) and the TFDS round trip."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from anira_jax import tasks

REPO = pathlib.Path(__file__).resolve().parents[1]

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "anira_jax.tasks", *args], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", tasks.names())
def test_show_prints_json_lines(name):
  result = run("show", "--task", name, "--size", "4", "--count", "3", "--seed", "7")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 3
  task = tasks.get(name)
  for line, ex in zip(lines, task.examples(7, 4, 3)):
    record = json.loads(line)
    assert list(record) == ["task", "size", "problem", "answer", "features", "feature_kinds"]
    assert (record["task"], record["size"]) == (name, 4)
    assert (record["problem"], record["answer"]) == (ex.problem, ex.answer)
    assert record["feature_kinds"] == dict(task.feature_kinds)
    assert record["features"] == ex.features
    assert all(len(v) == len(ex.answer) for v in record["features"].values())


def test_show_is_deterministic_and_takes_options():
  args = ("show", "--task", "graph", "--size", "6", "--count", "4", "--seed", "3")
  first, second, other = run(*args), run(*args), run(*args[:-1], "4")
  assert first.stdout == second.stdout != other.stdout
  result = run("show", "--task", "addition", "--size", "3", "--option", "lsb_first=true")
  record = json.loads(result.stdout)
  assert record["features"]["position"] == [0, 1, 2, 3]


@pytest.mark.parametrize("args", [
    ("show", "--task", "nope", "--size", "3"),
    ("show", "--task", "graph", "--size", "0"),
    ("show", "--task", "graph", "--size", "33"),
    ("show", "--task", "dyck", "--size", "250"),
    ("show", "--task", "dyck", "--size", "20", "--max_len", "10"),
    ("show", "--task", "dyck", "--size", "3", "--count", "0"),
    ("show", "--task", "dyck", "--size", "x"),
    ("show", "--task", "graph", "--size", "3", "--option", "colour=1"),
    ("build", "--task", "dyck", "--sizes", "4,,8", "--data_dir", "unused"),
    ("build", "--task", "dyck", "--sizes", "4,4", "--data_dir", "unused"),
    ("build", "--task", "dyck", "--sizes", "4", "--count", "-1", "--data_dir", "unused"),
    ("build", "--task", "dyck", "--sizes", "4"),
    ("frobnicate",),
])
def test_bad_input_is_one_clear_line(args):
  result = run(*args)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert 1 <= len(result.stderr.strip().splitlines()) <= 3
  assert "error" in result.stderr and not result.stdout
  if "nope" in args:
    assert all(name in result.stderr for name in tasks.names())


def test_importing_tasks_does_not_import_tfds():
  code = "import sys, anira_jax.tasks; print('tensorflow_datasets' in sys.modules)"
  result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
  assert result.stdout.strip() == "False", result.stderr


READ = """
import json, sys
import anira_jax.tasks
import tensorflow_datasets as tfds
out = {}
for data_dir in sys.argv[1:]:
  for split in ("size_3", "size_6"):
    source = tfds.data_source("anira_dyck", data_dir=data_dir, split=split)
    out[data_dir + split] = [{k: (v.decode() if isinstance(v, bytes) else v.tolist())
                              for k, v in source[i].items()} for i in range(len(source))]
assert "tensorflow" not in sys.modules
print(json.dumps(out))
"""


def test_build_and_data_source_round_trip(tmp_path):
  dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
  for data_dir in dirs:
    result = run("build", "--task", "dyck", "--sizes", "3,6", "--count", "5", "--seed", "2",
                 "--data_dir", data_dir, "--option", "k=3")
    assert result.returncode == 0, result.stderr
  result = subprocess.run([sys.executable, "-c", READ, *dirs], env=ENV, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  read = json.loads(result.stdout)
  task = tasks.get("dyck", k=3)
  for size in (3, 6):
    first, second = read[dirs[0] + f"size_{size}"], read[dirs[1] + f"size_{size}"]
    assert first == second and len(first) == 5
    examples = task.examples(2, size, 5)
    arrays = task.encode(examples, task.seq_len(size))
    for i, (record, ex) in enumerate(zip(first, examples)):
      assert json.loads(record["json"]) == {"problem": ex.problem, "answer": ex.answer}
      for key in ("inputs", "targets", "loss_mask"):
        assert record[key] == arrays[key][i].tolist()
      for name in task.feature_kinds:
        assert record[f"feature_{name}"] == arrays["features"][name][i].tolist()
  metadata = json.loads((tmp_path / "a" / "anira_dyck" / "1.0.0" / "metadata.json").read_text())
  assert metadata["sizes"] == [3, 6] and metadata["options"] == {"k": 3}
  assert metadata["seed"] == 2 and metadata["vocab_size"] == task.vocab_size


def test_registered_builder_reads_too(tmp_path):
  """In a process that imported the builders, data_source goes through the registered class."""
  import tensorflow_datasets as tfds
  from anira_jax.tasks import tfds_builder
  tfds.disable_progress_bar()
  tfds_builder.build("addition", [2], 4, str(tmp_path), seed=1)
  source = tfds.data_source("anira_addition", data_dir=str(tmp_path), split="size_2")
  arrays = tasks.get("addition").sample(1, 2, 4)
  assert len(source) == 4
  for i in range(4):
    np.testing.assert_array_equal(source[i]["inputs"], arrays["inputs"][i])
    np.testing.assert_array_equal(source[i]["feature_carry_chain"],
                                  arrays["features"]["carry_chain"][i])
