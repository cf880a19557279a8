"""decoding.py through Run.generate: the greedy tokens and their depths equal the teacher-forced
while_loop (run.predict on prompt + generated, at the position before each token) exactly, logits
within 1e-5, for every variant, both output rules and both schedules; the decode loop runs as
many steps as its schedule says; a row does not depend on its batch-mates; bad input raises
ValueError saying what to change."""
import functools

import jax
import numpy as np
import pytest

from anira_jax import config as config_lib, runs
from anira_jax.tasks.base import PAD, SEP
from conftest import LOOPED, random_params, tiny_config

# Sorting sizes in one batch: 1 and 9-12 lie outside the training sizes (2, 4) of tiny_config.
SIZES = (3, 1, 12, 9)
NEW = 6


@functools.cache
def _run(variant: str, output: str = "state", extras: tuple = ()) -> runs.Run:
  """A run with random parameters (halting bias 0: depths vary from 1 to k_max), shared by the
  tests so that each compiles its generator once. PAD's readout bias is -100, as training leaves
  it (PAD is never a target), so greedy decoding never feeds PAD back, which `predict` would
  refuse; iteration vectors are random (zeros at init would hide their effect)."""
  cfg = tiny_config(variant, halting__output=output, **dict(extras))
  params = random_params(cfg, seed=1, halt_bias=0.0)
  params["readout"]["out"]["bias"] = params["readout"]["out"]["bias"].at[PAD].set(-100.0)
  if "iteration" in params:
    params["iteration"] = jax.random.normal(jax.random.key(5), params["iteration"].shape)
  return runs.Run(config=cfg, task=config_lib.validate(cfg), params=params, step=0)


def _prompts(run: runs.Run, sizes, seed: int = 0) -> list[np.ndarray]:
  """Task prompts as task.sample builds them: the problem's tokens, then SEP."""
  return [np.array(run.task.examples(seed + i, n, 1)[0].prompt_tokens + [SEP])
          for i, n in enumerate(sizes)]


def _teacher_forced(run: runs.Run, prompts, tokens_BxM) -> dict:
  """run.predict(mode="while") on each prompt + its generated tokens (right-padded to one
  batch): logits [B, M, V] and depth [B, M] at the positions that produced the tokens, and the
  prompt tokens' depths."""
  seqs = [np.concatenate([p, t]) for p, t in zip(prompts, tokens_BxM)]
  batch = np.full((len(seqs), max(map(len, seqs))), PAD, np.int32)
  for row, seq in zip(batch, seqs):
    row[:len(seq)] = seq
  out = run.predict(batch, mode="while")
  M = tokens_BxM.shape[1]
  at = [slice(len(p) - 1, len(p) - 1 + M) for p in prompts]
  return {"logits": np.stack([out["logits"][b, s] for b, s in enumerate(at)]),
          "depth": np.stack([out["depth"][b, s] for b, s in enumerate(at)]),
          "prompt_depth": np.concatenate([out["depth"][b, :len(p)]
                                          for b, p in enumerate(prompts)])}


def _check_equals_teacher_forced(run, prompts, out, schedule):
  k_max = run.config.model.k_max
  B = len(prompts)
  assert out["tokens"].shape == out["depth"].shape == (B, NEW)
  assert out["logits"].shape == (B, NEW, run.task.vocab_size)
  tf = _teacher_forced(run, prompts, out["tokens"])
  np.testing.assert_array_equal(out["tokens"], np.argmax(tf["logits"], axis=-1))
  np.testing.assert_array_equal(out["depth"], tf["depth"])
  np.testing.assert_allclose(out["logits"], tf["logits"], rtol=0, atol=1e-5)
  if run.config.model.variant in LOOPED:
    assert len(np.unique(out["depth"])) > 2, f"depths do not vary: {np.unique(out['depth'])}"
  else:
    np.testing.assert_array_equal(out["depth"], k_max)
  # The prefill loops until every prompt token has halted; then lock-step waits at each position
  # for the deepest row, depth-wise for the row with the most iterations in all.
  assert int(out["prefill_iterations"]) == tf["prompt_depth"].max()
  later = out["depth"][:, 1:]
  steps = later.max(axis=0).sum() if schedule == "lockstep" else later.sum(axis=1).max()
  assert int(out["decode_steps"]) == steps


# (variant, halting.output, config overrides, schedule): every variant with both output rules,
# input injection and iteration vectors on each kind of core, both schedules on adaptive depth.
CASES = [
    ("anira_o", "state", (), "depthwise"),
    ("anira_o", "state", (), "lockstep"),
    ("anira_o", "distribution", (("model__input_injection", True),
                                 ("model__iteration_embedding", True)), "depthwise"),
    ("anira_e", "state", (("model__iteration_embedding", True),), "lockstep"),
    ("anira_e", "distribution", (("model__input_injection", True),), "depthwise"),
    ("fixed", "state", (), "lockstep"),
    ("fixed", "distribution", (("model__input_injection", True),), "depthwise"),
    ("transformer", "state", (("model__iteration_embedding", True),), "depthwise"),
    ("transformer", "distribution", (), "lockstep"),
]


@pytest.mark.parametrize("variant,output,extras,schedule", CASES,
                         ids=["-".join([c[0], c[1], *(k.split("__")[1] for k, _ in c[2]), c[3]])
                              for c in CASES])
def test_generate_equals_teacher_forced(variant, output, extras, schedule):
  run = _run(variant, output, extras)
  prompts = _prompts(run, SIZES)
  out = run.generate(prompts, NEW, schedule=schedule)
  _check_equals_teacher_forced(run, prompts, out, schedule)


def test_forced_depth_equals_teacher_forced():
  run = _run("anira_o")
  prompts = _prompts(run, SIZES)
  out = run.generate(prompts, NEW, depth=2)
  np.testing.assert_array_equal(out["depth"], 2)
  seq = np.concatenate([prompts[0], out["tokens"][0]])[None]
  tf = run.predict(seq, depth=2)
  at = slice(len(prompts[0]) - 1, len(prompts[0]) - 1 + NEW)
  np.testing.assert_array_equal(out["tokens"][0], np.argmax(tf["logits"][0, at], axis=-1))
  np.testing.assert_allclose(out["logits"][0], tf["logits"][0, at], rtol=0, atol=1e-5)
  assert int(out["decode_steps"]) == 2 * (NEW - 1)


@pytest.mark.parametrize("schedule", ["depthwise", "lockstep"])
def test_a_row_does_not_depend_on_its_batch_mates(schedule):
  run = _run("anira_o")
  alone = _prompts(run, (5,), seed=100)
  mates = _prompts(run, (2, 7, 1, 4, 3, 11, 6, 2, 9, 5, 8, 3, 10, 1, 4), seed=200)
  for index in (0, 9):   # first and inside, among mates longer and shorter
    batch = mates[:index] + alone + mates[index:]
    out_alone = run.generate(alone, NEW, schedule=schedule)
    out_batch = run.generate(batch, NEW, schedule=schedule)
    np.testing.assert_array_equal(out_batch["tokens"][index], out_alone["tokens"][0])
    np.testing.assert_array_equal(out_batch["depth"][index], out_alone["depth"][0])
    np.testing.assert_allclose(out_batch["logits"][index], out_alone["logits"][0], rtol=0,
                               atol=1e-6)
  assert len(np.unique(out_batch["depth"])) > 2


# Bad input: each check before anything compiles ---------------------------------------------------

@pytest.fixture(name="run")
def run_fixture():
  return _run("anira_o")


def test_empty_prompt_list_raises(run):
  with pytest.raises(ValueError, match=r"prompts is empty; pass a list of 1-D integer arrays"):
    run.generate([], NEW)


@pytest.mark.parametrize("prompt,shown", [
    (np.array([2.0, 3.0, 1.0]), r"float64 \(3,\)"),
    (np.array([[2, 3, 1]]), r"int64 \(1, 3\)"),
    (np.array(1), r"int64 \(\)"),
    (np.array([True, True]), r"bool \(2,\)"),
])
def test_prompt_not_a_1d_integer_array_raises(run, prompt, shown):
  with pytest.raises(ValueError, match=r"prompt 1 must be a 1-D integer array of token ids, got "
                                       + shown):
    run.generate([np.array([2, SEP]), prompt], NEW)


@pytest.mark.parametrize("bad_id", [18, -1])
def test_out_of_vocabulary_prompt_raises(run, bad_id):
  with pytest.raises(ValueError, match=rf"prompt 0 has token id {bad_id}, outside the vocabulary "
                                       r"\[0, 18\) of task 'sorting'"):
    run.generate([np.array([2, bad_id, SEP])], NEW)


def test_prompt_not_ending_with_sep_raises(run):
  for prompt in (np.array([2, 3]), np.array([], np.int32)):
    with pytest.raises(ValueError, match=r"prompt 1 does not end with SEP \(id 1\); end each "
                                         r"prompt with SEP"):
      run.generate([np.array([2, SEP]), prompt], NEW)


def test_prompt_with_padding_raises(run):
  with pytest.raises(ValueError, match=r"prompt 0 has PAD \(id 0\) at position 1; pass prompts "
                                       "without padding"):
    run.generate([np.array([2, PAD, SEP])], NEW)


def test_prompt_too_long_for_max_len_raises(run):
  prompt = np.array([2] * 26 + [SEP])   # 27 tokens + 6 new > model.max_len 32
  with pytest.raises(ValueError) as e:
    run.generate([np.array([2, SEP]), prompt], NEW)
  assert str(e.value) == ("prompt 1 has 27 tokens and max_new_tokens is 6: 33 > model.max_len=32; "
                          "shorten the prompt or lower max_new_tokens")


@pytest.mark.parametrize("max_new_tokens", [0, -2, 2.0, None, True])
def test_max_new_tokens_below_one_raises(run, max_new_tokens):
  with pytest.raises(ValueError, match=r"max_new_tokens must be an integer >= 1, got "):
    run.generate([np.array([2, SEP])], max_new_tokens)


def test_unknown_schedule_raises(run):
  with pytest.raises(ValueError, match="schedule must be one of lockstep, depthwise, got 'fast'"):
    run.generate([np.array([2, SEP])], NEW, schedule="fast")


def test_forced_depth_out_of_range_raises(run):
  with pytest.raises(ValueError, match="depth must be an integer from 1 to model.k_max=4"):
    run.generate([np.array([2, SEP])], NEW, depth=5)
