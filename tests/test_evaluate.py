"""evaluate.py: eval.json schema, the accuracy and depth arithmetic, and its command line."""
import shutil

import numpy as np
import pytest

from anira_jax import data, evaluate, runs
from anira_jax.tasks.base import PAD
from conftest import read_eval, run_module, stderr_lines, tiny_config

SIZE_KEYS = {"token_accuracy", "sequence_accuracy", "mean_depth", "depth_std", "depth_hist",
             "needed_mean_depth", "needed_depth_std", "needed_depth_hist", "waste", "unmatched",
             "forced_token_accuracy", "forced_sequence_accuracy", "in_distribution"}


def test_eval_json_schema(trained_run):
  result = read_eval(trained_run("anira_o"))
  assert set(result) == {"step", "variant", "task", "sizes", "alignment"}
  assert result["alignment"]["main_feature"] == "remaining"
  assert -1.0 <= result["alignment"]["spearman_needed"] <= 1.0
  assert (result["step"], result["variant"], result["task"]) == (30, "anira_o", "sorting")
  assert list(result["sizes"]) == ["2", "4", "6"]
  for size, m in result["sizes"].items():
    assert set(m) == SIZE_KEYS, size
    assert 0.0 <= m["sequence_accuracy"] <= m["token_accuracy"] <= 1.0
    assert 1.0 <= m["mean_depth"] <= 4.0 and m["depth_std"] >= 0.0
    assert len(m["depth_hist"]) == 4 and sum(m["depth_hist"]) == pytest.approx(1.0, abs=1e-5)
    assert 1.0 <= m["needed_mean_depth"] <= 4.0 and 0.0 <= m["unmatched"] < 1.0
    assert len(m["forced_token_accuracy"]) == len(m["forced_sequence_accuracy"]) == 4
    assert m["in_distribution"] is (size in ("2", "4"))


def test_evaluate_run_reproduces_training_eval(tmp_path, trained_run):
  """Reloading the checkpoint and evaluating gives exactly the numbers training wrote."""
  workdir = tmp_path / "run"
  shutil.copytree(trained_run("anira_o"), workdir)
  written = read_eval(workdir)
  records_written = evaluate.load_records(str(workdir))
  (workdir / "eval.json").unlink()
  evaluate.evaluate_run(str(workdir))
  assert read_eval(workdir) == written
  records = evaluate.load_records(str(workdir))
  assert records.keys() == records_written.keys()
  for k in records:
    np.testing.assert_array_equal(records[k], records_written[k])
  # One record per answer token, and they agree with eval.json.
  for size, m in written["sizes"].items():
    rows = records["size"] == int(size)
    assert rows.sum() == 16 * int(size)
    assert records["correct"][rows].mean() == pytest.approx(m["token_accuracy"])
    assert records["depth"][rows].mean() == pytest.approx(m["mean_depth"])
    assert (records["in_distribution"][rows] == m["in_distribution"]).all()


def test_generation_accuracy_equals_the_teacher_forced_one(trained_run):
  # A sequence is right teacher-forced exactly when greedy generation gives its answer: the two
  # accuracies agree at every size, in and out of distribution.
  run = runs.load_run(str(trained_run("anira_o")))
  cfg = run.config.copy_and_resolve_references()
  cfg.eval.generation = True
  cfg.task.eval_sizes = (1, 2, 4, 6)   # after 30 steps only size 1 (one answer token) is ever right
  result, _ = evaluate.evaluate(cfg, run.task, run.params, evaluate.predictors(cfg),
                                data.eval_sets(cfg, run.task))
  accuracies = [(m["generation_sequence_accuracy"], m["sequence_accuracy"])
                for m in result["sizes"].values()]
  assert all(g == t for g, t in accuracies), accuracies
  assert len({t for _, t in accuracies}) > 1   # not all 0 or all 1


def test_prompts_of_by_hand():
  batch = {"inputs": np.array([[5, 6, 1, 7, 8], [5, 1, 7, 0, 0]]),
           "loss_mask": np.array([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], bool)}
  prompts, lengths, answer = evaluate.prompts_of(batch)
  np.testing.assert_array_equal(prompts, [[5, 6, 1], [5, 1, PAD]])
  np.testing.assert_array_equal(lengths, [3, 2])
  np.testing.assert_array_equal(answer, [2, 2])


def _crafted(vocab=18, k_max=4):
  """Two sets with a predictor that is right except at chosen places, and depth = position % 4 + 1.

  size 2 (3 examples): example 0 wrong at its first answer token; example 1 wrong at a prompt
  position only (does not count); example 2 right.  size 3 (2 examples): all right."""
  cfg = tiny_config("anira_o", task__eval_sizes=(2, 3, 6))
  sets = {}
  for size, count in ((2, 3), (3, 2)):
    length = 2 * size
    inputs = np.full((count, length), PAD, np.int32)
    targets = np.full((count, length), PAD, np.int32)
    mask = np.zeros((count, length), bool)
    for b in range(count):
      inputs[b] = 2 + (np.arange(length) + 3 * b + size) % 16
      targets[b] = 2 + (np.arange(length) + 5 * b) % 16
      mask[b, size:] = True
    sets[size] = {"inputs": inputs, "targets": targets, "loss_mask": mask,
                  "features": {"remaining": mask * 1.0}}
  wrong = {(2, 0, 2), (2, 1, 0)}   # (size, example, position)

  def predict(params, inputs):
    del params
    width_all = inputs.shape[1]
    assert width_all == 6   # padded to the longest set
    for size, batch in sets.items():
      width = batch["inputs"].shape[1]
      if inputs.shape[0] == len(batch["inputs"]) and (inputs[:, :width] == batch["inputs"]).all():
        assert (inputs[:, width:] == PAD).all()
        pred = np.pad(batch["targets"], ((0, 0), (0, width_all - width)))
        for s, b, p in wrong:
          if s == size:
            pred[b, p] = (pred[b, p] + 1) % vocab
        logits = np.eye(vocab, dtype=np.float32)[pred]
        depth = np.broadcast_to(np.arange(width_all) % k_max + 1, inputs.shape)
        return {"logits": logits, "depth": depth, "iterations": k_max}
    raise AssertionError("unexpected inputs")

  def forced(params, inputs, k):
    # The own prediction once k reaches position % 2 + 1, another token before; never at
    # (size 3, example 0, position 5).
    out = predict(params, inputs)
    pred = out["logits"].argmax(-1)
    position = np.broadcast_to(np.arange(inputs.shape[1]), inputs.shape)
    other = np.where(k >= position % 2 + 1, pred, (pred + 2) % vocab)
    if inputs.shape[0] == 2 and (inputs == sets[3]["inputs"]).all():
      other[0, 5] = (pred[0, 5] + 3) % vocab
    return {**out, "logits": np.eye(vocab, dtype=np.float32)[other], "depth": np.full_like(
        out["depth"], k)}

  return cfg, sets, evaluate.Predictors(predict, forced)


def test_accuracy_and_depth_on_crafted_predictor():
  cfg, sets, predict = _crafted()
  result, records = evaluate.evaluate(cfg, _Task(), None, predict, sets)
  two, three = result["sizes"]["2"], result["sizes"]["3"]
  assert two["token_accuracy"] == pytest.approx(5 / 6)
  assert two["sequence_accuracy"] == pytest.approx(2 / 3)
  assert three["token_accuracy"] == 1.0 and three["sequence_accuracy"] == 1.0
  # Answer positions 2, 3 (size 2) have depths 3, 4; positions 3, 4, 5 (size 3) depths 4, 1, 2.
  assert two["mean_depth"] == pytest.approx(3.5) and two["depth_std"] == pytest.approx(0.5)
  assert two["depth_hist"] == [0.0, 0.0, 0.5, 0.5]
  assert three["mean_depth"] == pytest.approx(7 / 3)
  assert three["depth_hist"] == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3], abs=1e-6)
  assert two["in_distribution"] and three["in_distribution"]
  assert result["task"] == "crafted" and result["variant"] == "anira_o"
  assert records["correct"].sum() == 5 + 6 and records["size"].size == 6 + 6
  np.testing.assert_array_equal(records["position"][records["size"] == 3], [3, 4, 5, 3, 4, 5])


def test_needed_depth_and_forced_accuracy_on_crafted_predictor():
  cfg, sets, predict = _crafted()
  result, records = evaluate.evaluate(cfg, _Task(), None, predict, sets)
  three = records["size"] == 3
  # Positions 3, 4, 5 need 2, 1, 2 iterations; (example 0, position 5) is reproduced by none.
  np.testing.assert_array_equal(records["needed_depth"][three], [2, 1, 0, 2, 1, 2])
  np.testing.assert_array_equal(records["needed_depth"][~three], [1, 2] * 3)
  m = result["sizes"]["3"]
  assert m["unmatched"] == pytest.approx(1 / 6)
  assert m["needed_mean_depth"] == pytest.approx(8 / 5)
  assert m["needed_depth_hist"] == pytest.approx([0.4, 0.6, 0.0, 0.0])
  # Own depths at positions 3, 4, 5 are 4, 1, 2: waste over the matched tokens.
  assert m["waste"] == pytest.approx(((4 - 2) + 0 + (4 - 2) + 0 + 0) / 5)
  # Size 3 predicts every target right at its own depth; forced at 1, positions 3 and 5 are wrong.
  assert m["forced_token_accuracy"] == pytest.approx([1 / 3, 5 / 6, 5 / 6, 5 / 6], abs=1e-6)
  assert m["forced_sequence_accuracy"] == pytest.approx([0.0, 0.5, 0.5, 0.5], abs=1e-6)
  assert records["forced_correct"].shape == (12, cfg.model.k_max)
  np.testing.assert_array_equal(records["forced_correct"][three][:, 0], [0, 1, 0, 0, 1, 0])


class _Task:
  name = "crafted"
  main_feature = "remaining"


def test_in_distribution_flags():
  cfg, sets, predict = _crafted()
  cfg.task.train_sizes = (3, 4)
  result, _ = evaluate.evaluate(cfg, _Task(), None, predict, sets)
  assert result["sizes"]["2"]["in_distribution"] is False
  assert result["sizes"]["3"]["in_distribution"] is True


def test_depth_summary_by_hand():
  depth = np.array([[1, 2, 2, 0], [4, 4, 1, 3]])
  mask = np.array([[True, True, True, False], [True, False, False, True]])
  s = evaluate.depth_summary(depth, mask, 4)
  d = np.array([1, 2, 2, 4, 3])
  assert s["mean_depth"] == pytest.approx(d.mean()) and s["depth_std"] == pytest.approx(d.std())
  assert s["depth_hist"] == [0.2, 0.4, 0.2, 0.2]


def test_cli_missing_workdir_exits_2_with_one_line(tmp_path):
  missing = tmp_path / "missing"
  proc = run_module("anira_jax.evaluate", f"--workdir={missing}")
  assert proc.returncode == 2
  assert stderr_lines(proc) == [
      f"error: workdir {str(missing)!r} does not exist; train a run there with python -m "
      f"anira_jax.main --config=configs/<task>.py --workdir={missing}"]
  assert not missing.exists()


def test_cli_workdir_without_run_exits_2(tmp_path):
  proc = run_module("anira_jax.evaluate", f"--workdir={tmp_path}")
  assert proc.returncode == 2
  lines = stderr_lines(proc)
  assert len(lines) == 1 and "missing config.json" in lines[0], proc.stderr
  assert list(tmp_path.iterdir()) == []
