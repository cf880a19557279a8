"""decoding.py through Run.generate: the greedy tokens and their depths equal the teacher-forced
while_loop (run.predict on prompt + generated, at the position before each token) exactly, logits
within 1e-5, for every variant, both output rules and both schedules (in bfloat16 too, logits
within bfloat16 rounding; with compaction on a shared layer); the decode loop runs as many steps as its schedule says; a row does not
depend on its batch-mates; bad input raises ValueError saying what to change."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anira_jax import config as config_lib, decoding, model, runs
from anira_jax.tasks.base import PAD, SEP
from conftest import LOOPED, tiny_config

# Sorting sizes of one batch of 16: most lie outside the training sizes (2, 4) of tiny_config.
SIZES = (3, 1, 12, 9, 2, 7, 4, 11, 5, 8, 1, 10, 6, 12, 3, 2)
NEW = 6
NO_PRELUDE = (("model__prelude_layers", 0),)


def _random_params(cfg, task, seed: int) -> dict:
  """model.init_params' tree with values drawn by NumPy: kernels N(0, 1/d_model), embeddings and
  iteration vectors N(0, 1) (zeros at init would hide their effect), biases N(0, 0.01) but the
  halting unit's 0 (depths vary from 1 to k_max) and PAD's readout -100, as training leaves it (PAD
  is never a target: greedy decoding never feeds PAD back, which `predict` would refuse). Flax's
  eager init compiles each of its operations, 10 s of this file's time on one core."""
  shapes = jax.eval_shape(lambda: model.init_params(cfg.model, task.vocab_size, jax.random.key(0),
                                                    0.0, cfg.halting.input_norm))
  rng = np.random.default_rng(seed)

  def draw(path, x):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return np.ones(x.shape, np.float32)
    if "bias" in name:
      return np.zeros(x.shape, np.float32) if "halt" in name else rng.normal(0, 0.1, x.shape)
    return rng.normal(0, 1 if "embedding" in name or "iteration" in name
                      else cfg.model.d_model ** -0.5, x.shape)
  params = jax.tree_util.tree_map_with_path(lambda p, x: np.asarray(draw(p, x), np.float32), shapes)
  params["readout"]["out"]["bias"][PAD] = -100.0
  return params


@functools.cache
def _run(variant: str, output: str = "state", extras: tuple = ()) -> runs.Run:
  """A run with random parameters, shared by the tests so that each compiles its generator
  once."""
  cfg = tiny_config(variant, halting__output=output, **dict(extras))
  task = config_lib.validate(cfg)
  return runs.Run(config=cfg, task=task, params=_random_params(cfg, task, seed=1), step=0)


def _prompts(run: runs.Run, sizes, seed: int = 0) -> list[np.ndarray]:
  """Task prompts as task.sample builds them: the problem's tokens, then SEP."""
  return [np.array(run.task.examples(seed + i, n, 1)[0].prompt_tokens + [SEP])
          for i, n in enumerate(sizes)]


def _teacher_forced(run: runs.Run, prompts, tokens_BxM, depth: int | None = None) -> dict:
  """run.predict(mode="while", depth) on each prompt + its generated tokens (right-padded to one
  batch): logits [B, M, V] and depth [B, M] at the positions that produced the tokens, and the
  prompt tokens' depths."""
  seqs = [np.concatenate([p, t]) for p, t in zip(prompts, tokens_BxM)]
  batch = np.full((len(seqs), max(map(len, seqs))), PAD, np.int32)
  for row, seq in zip(batch, seqs):
    row[:len(seq)] = seq
  out = run.predict(batch, mode="while", depth=depth)
  M = tokens_BxM.shape[1]
  at = [slice(len(p) - 1, len(p) - 1 + M) for p in prompts]
  return {"logits": np.stack([out["logits"][b, s] for b, s in enumerate(at)]),
          "depth": np.stack([out["depth"][b, s] for b, s in enumerate(at)]),
          "prompt_depth": np.concatenate([out["depth"][b, :len(p)]
                                          for b, p in enumerate(prompts)])}


def _check_equals_teacher_forced(run, prompts, out, schedule, rtol=0.0, atol=1e-5):
  k_max = run.config.model.k_max
  B = len(prompts)
  assert out["tokens"].shape == out["depth"].shape == (B, NEW)
  assert out["logits"].shape == (B, NEW, run.task.vocab_size)
  tf = _teacher_forced(run, prompts, out["tokens"])
  np.testing.assert_array_equal(out["tokens"], np.argmax(tf["logits"], axis=-1))
  np.testing.assert_array_equal(out["depth"], tf["depth"])
  np.testing.assert_allclose(out["logits"], tf["logits"], rtol=rtol, atol=atol)
  if run.config.model.variant in LOOPED:
    assert len(np.unique(out["depth"])) > 2, f"depths do not vary: {np.unique(out['depth'])}"
  else:
    np.testing.assert_array_equal(out["depth"], k_max)
  # The prefill loops until every prompt token has halted; then lock-step waits at each position
  # for the deepest row, depth-wise for the row with the most iterations in all.
  assert int(out["prefill_iterations"]) == tf["prompt_depth"].max()
  later = out["depth"][:, 1:]
  steps = later.max(axis=0).sum() if schedule == "lockstep" else later.sum(axis=1).max()
  assert int(out["decode_iterations"]) == steps
  assert int(out["iterations"]) == int(out["prefill_iterations"]) + steps


# (variant, halting.output, config overrides, schedule): every variant, both output rules on each
# adaptive variant (at fixed depth the rule only normalises the last iteration's logits), input
# injection and iteration vectors on each kind of core, both schedules on adaptive depth
# (and the lock-step loop in every single-row generation), with a prelude layer or none (faster
# to compile).
CASES = [
    ("anira_o", "state", (), "depthwise"),
    ("anira_o", "distribution", (("model__input_injection", True),
                                 ("model__iteration_embedding", True)), "depthwise"),
    ("anira_e", "state", (("model__iteration_embedding", True),), "lockstep"),
    ("anira_e", "distribution", (("model__input_injection", True), *NO_PRELUDE), "depthwise"),
    ("fixed", "distribution", (("model__input_injection", True), *NO_PRELUDE), "depthwise"),
    ("transformer", "state", (("model__iteration_embedding", True), *NO_PRELUDE), "depthwise"),
]


@pytest.mark.parametrize("variant,output,extras,schedule", CASES,
                         ids=["-".join([c[0], c[1], *(k.split("__")[1] for k, _ in c[2]), c[3]])
                              for c in CASES])
def test_generate_equals_teacher_forced(variant, output, extras, schedule):
  run = _run(variant, output, extras)
  prompts = _prompts(run, SIZES)
  out = run.generate(prompts, NEW, schedule=schedule)
  _check_equals_teacher_forced(run, prompts, out, schedule)


# Compaction: a shared-layer variant of each halting timing, each schedule.
COMPACT_CASES = [("anira_o", "state", (), "lockstep"),
                 ("anira_e", "distribution", (("model__input_injection", True),), "depthwise")]


@pytest.mark.parametrize("variant,output,extras,schedule", COMPACT_CASES,
                         ids=["-".join([c[0], c[1], c[3]]) for c in COMPACT_CASES])
def test_compacted_generation_equals_teacher_forced(variant, output, extras, schedule):
  """The prefill runs the block only on the active prompt tokens and fills the cache from the
  projections compaction keeps; lock-step positions run it only on the active rows, 8 at a time
  or all at once: the same tokens and depths, logits within 1e-5."""
  run = _run(variant, output, extras)
  prompts = _prompts(run, SIZES)
  out = run.generate(prompts, NEW, schedule=schedule, compact=True)
  _check_equals_teacher_forced(run, prompts, out, schedule)
  if schedule == "lockstep":   # both kinds of compacted iteration ran
    active = [(out["depth"][:, n] > t).sum() for n in range(1, NEW)
              for t in range(1, run.config.model.k_max)]
    assert any(0 < a <= 8 for a in active) and any(a > 8 for a in active), active


@pytest.mark.parametrize("variant,extras", [("transformer", ()),
                                            ("anira_o", (("model__iteration_embedding", True),))])
def test_compaction_rejects_what_it_cannot_run(variant, extras):
  run = _run(variant, "state", extras)
  with pytest.raises(ValueError, match="or generate without compact"):
    run.generate([np.array([2, SEP])], NEW, compact=True)


def test_generate_in_bfloat16_equals_teacher_forced():
  """model.dtype=bfloat16, keys and values cached in bfloat16: the same tokens and depths as the
  teacher-forced pass, exactly. The logits (bfloat16 values from the readout matmul) are allowed
  two bfloat16 steps (2^-6 relative), since the cached attention runs over another length than
  the teacher-forced batch and its float32 sums may round to neighbouring bfloat16 values;
  measured: equal bit for bit here, as are the lock-step schedule's. A depth or token could
  flip only where a halting logit or two logits sit within that rounding of a tie."""
  run = _run("anira_o", "state", (("model__dtype", "bfloat16"),))
  assert decoding.init_cache(run.config.model, 1, 2).k_BxKxHxLxDh.dtype == jnp.bfloat16
  prompts = _prompts(run, SIZES)
  out = run.generate(prompts, NEW, schedule="depthwise")
  _check_equals_teacher_forced(run, prompts, out, "depthwise", rtol=2 ** -6, atol=2 ** -6)


def test_forced_depth_equals_teacher_forced():
  """depth = k, the baseline of a speed comparison."""
  run = _run("anira_o")
  prompts = _prompts(run, (7,), seed=100)
  out = run.generate(prompts, NEW, depth=2)
  np.testing.assert_array_equal(out["depth"], 2)
  assert int(out["prefill_iterations"]) == 2 and int(out["decode_iterations"]) == 2 * (NEW - 1)
  tf = _teacher_forced(run, prompts, out["tokens"], depth=2)
  np.testing.assert_array_equal(out["tokens"], np.argmax(tf["logits"], axis=-1))
  np.testing.assert_allclose(out["logits"], tf["logits"], rtol=0, atol=1e-5)


def test_a_row_does_not_depend_on_its_batch_mates():
  """One row alone (the lock-step loop) and among 15 others of other lengths, first and inside;
  the batches have the shape of the first exactness case, whose compilation they reuse."""
  run = _run("anira_o")
  alone = _prompts(run, (5,), seed=100)
  out_alone = run.generate(alone, NEW)
  for index, seed in ((0, 200), (9, 300)):
    mates = _prompts(run, SIZES[1:], seed)
    out = run.generate(mates[:index] + alone + mates[index:], NEW, schedule="depthwise")
    np.testing.assert_array_equal(out["tokens"][index], out_alone["tokens"][0])
    np.testing.assert_array_equal(out["depth"][index], out_alone["depth"][0])
    np.testing.assert_allclose(out["logits"][index], out_alone["logits"][0], rtol=0, atol=1e-6)
    assert len(np.unique(out["depth"])) > 2
  assert len(np.unique(out_alone["depth"])) > 1


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
