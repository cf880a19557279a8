"""generate.py: problems, generated answers with per-token depth, and whether they are right."""
import json

import numpy as np
import pytest

from anira_jax import errors, generate, runs
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


def test_text_shows_each_problem_its_answer_with_depths_and_the_verdict(run):
  result = generate.generate(run, size=4, count=16, seed=3)   # the shapes compiled above
  lines = generate.render(result, run.config.model.k_max).splitlines()
  assert len(lines) == 16 * 3 + 1
  for i, ex in enumerate(result["examples"]):
    problem, generated, expected = lines[3 * i:3 * i + 3]
    assert problem == f"problem {i}: {json.dumps(ex['problem'])}"
    assert generated.split(": ", 1)[1].split() == [
        f"{s}({d})" for s, d in zip(ex["generated"], ex["depth"])]
    assert expected.split()[1:-1] == [str(s) for s in ex["expected"]]
    assert expected.split()[-1] == ("right" if ex["right"] else "WRONG")
  assert lines[-1].startswith("size 4: ") and "mean depth" in lines[-1]


def test_command_prints_one_json_document(trained_run):
  workdir = str(trained_run("anira_o"))
  proc = run_module("anira_jax.generate", f"--workdir={workdir}", "--size=4", "--count=3",
                    "--json")
  assert proc.returncode == 0, proc.stderr
  result = json.loads(proc.stdout)
  assert (result["task"], result["variant"], result["size"]) == ("sorting", "anira_o", 4)
  assert result == {**result, **generate.generate(runs.load_run(workdir), 4, 3, 1234)}


@pytest.mark.parametrize("size,count,message", [
    (40, 2, "model.max_len"), (4, 0, "--count must be positive"), (0, 2, "sizes >= ")])
def test_bad_input_says_what_to_change(run, size, count, message):
  with pytest.raises(errors.UserError, match=message):
    generate.generate(run, size=size, count=count, seed=0)


def test_missing_run_is_one_line(tmp_path):
  proc = run_module("anira_jax.generate", f"--workdir={tmp_path / 'none'}", "--size=4")
  assert proc.returncode == 2 and "does not exist" in proc.stderr
  assert len(stderr_lines(proc)) == 1
