"""generate.py: problems, generated answers with per-token depth, and whether they are right."""
import json

import numpy as np
import pytest

from anira_jax import generate, runs
from anira_jax.tasks.base import SEP
from conftest import run_module, stderr_lines

pytestmark = pytest.mark.xdist_group("test_generate")   # one worker: module fixture runs once


@pytest.fixture(name="run", scope="module")
def run_fixture(trained_run):
  return runs.load_run(str(trained_run("anira_o")))


def test_right_exactly_when_the_teacher_forced_answer_is(run):
  # Greedy generation reproduces an answer exactly when every answer token is predicted right
  # with the true prefix, so the two sequence accuracies agree example by example.
  result = generate.generate(run, size=4, count=16, seed=3)
  examples = run.task.examples(3, 4, 16)
  batch = run.task.encode(examples, run.task.seq_len(4))
  teacher = run.predict(batch["inputs"])["logits"].argmax(-1)
  teacher_right = ((teacher == batch["targets"]) | ~batch["loss_mask"]).all(axis=1)
  right = np.array([e["right"] for e in result["examples"]])
  np.testing.assert_array_equal(right, teacher_right)
  assert result["sequence_accuracy"] == right.mean()
  for ex, shown in zip(examples, result["examples"]):
    assert shown["expected"] == ex.answer
    assert len(shown["generated"]) == len(shown["depth"]) == len(ex.answer)
    assert all(1 <= d <= run.config.model.k_max for d in shown["depth"])
  out = run.generate([np.array(ex.prompt_tokens + [SEP]) for ex in examples], 4)
  assert [e["depth"] for e in result["examples"]] == out["depth"].tolist()


def test_command_prints_problems_answers_and_depths(trained_run):
  workdir = str(trained_run("anira_o"))
  text = run_module("anira_jax.generate", f"--workdir={workdir}", "--size=4", "--count=3")
  assert text.returncode == 0, text.stderr
  lines = text.stdout.splitlines()
  assert [line.split(":")[0] for line in lines[:-1:3]] == ["problem 0", "problem 1", "problem 2"]
  assert all(line.startswith("  generated: ") for line in lines[1::3])
  assert lines[-1].startswith("size 4: ") and "mean depth" in lines[-1]
  machine = run_module("anira_jax.generate", f"--workdir={workdir}", "--size=4", "--count=3",
                       "--json")
  assert machine.returncode == 0, machine.stderr
  result = json.loads(machine.stdout)
  assert result["task"] == "sorting" and len(result["examples"]) == 3
  generated = lines[1].split(": ", 1)[1].split()
  first = result["examples"][0]
  assert generated == [f"{s}({d})" for s, d in zip(first["generated"], first["depth"])]


@pytest.mark.parametrize("args,message", [
    (["--size=40"], "model.max_len"),
    (["--size=4", "--count=0"], "--count must be positive"),
    (["--size=0"], "sizes >= "),
])
def test_bad_input_is_one_line(trained_run, args, message):
  proc = run_module("anira_jax.generate", f"--workdir={trained_run('anira_o')}", *args)
  assert proc.returncode == 2
  assert len(stderr_lines(proc)) == 1 and message in proc.stderr, proc.stderr


def test_missing_run_is_one_line(tmp_path):
  proc = run_module("anira_jax.generate", f"--workdir={tmp_path / 'none'}", "--size=4")
  assert proc.returncode == 2 and "does not exist" in proc.stderr
  assert len(stderr_lines(proc)) == 1
