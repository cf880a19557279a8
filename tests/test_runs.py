"""runs.py: loading a trained run and predicting with it; clear errors on bad input."""
import shutil

import numpy as np
import pytest

from anira_jax import runs
from anira_jax.errors import UserError
from anira_jax.tasks.base import PAD
from conftest import tiny_batch


@pytest.fixture(scope="module")
def run(trained_run):
  return runs.load_run(str(trained_run("anira_o")))


def test_load_run(run):
  assert run.step == 30
  assert run.task.name == "sorting" and run.task.vocab_size == 18
  assert run.config.model.variant == "anira_o" and run.config.model.k_max == 4
  assert run.params["embed"]["embedding"].shape == (18, 16)


def test_predict_modes_agree(run):
  inputs = tiny_batch(run.config, 3)["inputs"]
  by_while = run.predict(inputs)                 # default mode: while
  by_scan = run.predict(inputs, mode="scan")
  for out in (by_while, by_scan):
    assert set(out) == {"logits", "depth", "iterations"}
    assert all(isinstance(v, np.ndarray) for v in out.values())
    assert out["logits"].shape == inputs.shape + (18,)
  np.testing.assert_array_equal(by_while["logits"], by_scan["logits"])
  np.testing.assert_array_equal(by_while["depth"], by_scan["depth"])
  np.testing.assert_array_equal(by_while["depth"][inputs == PAD], 0)
  assert int(by_scan["iterations"]) == 4
  assert int(by_while["iterations"]) == by_while["depth"].max()
  by_compact = run.predict(inputs, mode="compact")
  np.testing.assert_allclose(by_compact["logits"], by_while["logits"], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(by_compact["depth"], by_while["depth"])
  assert int(by_compact["iterations"]) == int(by_while["iterations"])
  # Python lists and other integer dtypes are accepted.
  np.testing.assert_array_equal(run.predict(inputs.astype(np.int64).tolist())["logits"],
                                by_while["logits"])


@pytest.mark.parametrize("bad_id", [18, 1000, -1])
def test_out_of_vocabulary_ids_raise(run, bad_id):
  inputs = np.array([[2, 3, bad_id, 1, 4]])
  with pytest.raises(ValueError, match=rf"token id {bad_id} is outside the vocabulary \[0, 18\) "
                                       r"of task 'sorting'"):
    run.predict(inputs)


@pytest.mark.parametrize("inputs,what", [
    (np.array([[2.0, 3.0, 1.0]]), "float"),
    (np.array([[True, False]]), "bool"),
    (np.array([2, 3, 1]), "1-d"),
    (np.array([["a", "b"]]), "str"),
])
def test_wrong_dtype_or_rank_raises(run, inputs, what):
  with pytest.raises(ValueError, match=r"inputs must be an integer array \[batch, length\]"):
    run.predict(inputs)


def test_predict_at_a_forced_depth(run):
  inputs = tiny_batch(run.config, 3)["inputs"]
  for k in (1, 4):
    by_while = run.predict(inputs, depth=k)
    by_scan = run.predict(inputs, mode="scan", depth=k)
    np.testing.assert_array_equal(by_while["logits"], by_scan["logits"])
    np.testing.assert_array_equal(by_while["depth"][inputs != PAD], k)
    np.testing.assert_array_equal(by_while["depth"][inputs == PAD], 0)
    assert int(by_while["iterations"]) == k
  own = run.predict(inputs)
  assert not np.array_equal(run.predict(inputs, depth=1)["logits"], own["logits"])


@pytest.mark.parametrize("depth", [0, 5, 2.0, "3"])
def test_forced_depth_out_of_range_raises(run, depth):
  with pytest.raises(ValueError, match="depth must be an integer from 1 to model.k_max=4"):
    run.predict(tiny_batch(run.config, 3)["inputs"], depth=depth)


def test_pad_before_a_token_raises_and_trailing_pad_is_accepted(run):
  right = np.array([[2, 3, 1, 0, 0], [2, 3, 4, 1, 5]])
  assert run.predict(right)["logits"].shape == (2, 5, 18)
  left = np.array([[2, 3, 4, 1, 5], [0, 0, 2, 3, 1]])
  with pytest.raises(ValueError) as e:
    run.predict(left)
  assert str(e.value) == ("row 1 has PAD (id 0) at position 1 before a token; pad rows at the "
                          "end only (right-padding)")
  with pytest.raises(ValueError, match="row 0 has PAD .* at position 1 before a token"):
    run.predict(np.array([[2, 0, 3, 0]]))


def test_unknown_mode_raises(run):
  with pytest.raises(ValueError, match="mode must be one of scan, while, compact, got 'fast'"):
    run.predict(np.array([[2, 3]]), mode="fast")


def test_missing_workdir_raises_user_error(tmp_path):
  with pytest.raises(UserError, match="missing config.json"):
    runs.load_run(str(tmp_path / "nowhere"))
  assert not (tmp_path / "nowhere").exists()


def test_workdir_without_checkpoint_raises_user_error(tmp_path, trained_run):
  shutil.copy(trained_run("anira_o") / "config.json", tmp_path / "config.json")
  with pytest.raises(UserError, match="no checkpoint in"):
    runs.load_run(str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()
