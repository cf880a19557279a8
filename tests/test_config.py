"""config.py: the defaults validate for every variant; every bad value is a ConfigError."""
import pytest

from anira_jax import config, errors, tasks
from conftest import VARIANTS, _config_module, tiny_config


@pytest.mark.parametrize("variant", VARIANTS)
def test_defaults_validate(variant):
  task = config.validate(_config_module().get_config(variant))
  assert isinstance(task, tasks.Task) and task.name == "sorting" and task.vocab_size == 18
  assert config.validate(config.default("sorting", variant)).name == "sorting"


def test_config_file_default_variant_is_anira_o():
  assert _config_module().get_config().model.variant == "anira_o"
  assert _config_module().get_config("").model.variant == "anira_o"


def test_unknown_variant_in_default():
  with pytest.raises(config.ConfigError, match="unknown variant 'bogus'; valid variants: "
                                               "anira_o, anira_e, fixed, transformer"):
    config.default("sorting", "bogus")


def test_config_error_is_user_and_value_error():
  assert issubclass(config.ConfigError, errors.UserError)
  assert issubclass(config.ConfigError, ValueError)


BAD = [
    ("task.name", "juggling", "unknown task 'juggling'"),
    ("task.options", {"num_values": 16, "colour": 3}, "bad options for task 'sorting'"),
    ("model.variant", "bogus", "unknown variant 'bogus'"),
    ("task.train_sizes", (5, 3), "min 5 exceeds max 3"),
    ("task.train_sizes", (2, 3, 4), "task.train_sizes is (min, max)"),
    ("task.train_sizes", ("a", "b"), "must be a tuple of integers"),
    ("task.train_sizes", (2.5, 4), "must hold integers"),
    ("task.train_sizes", (0, 8), "size 0 is below the sorting minimum 1"),
    ("task.eval_sizes", (), "task.eval_sizes is empty"),
    ("task.eval_sizes", (2, -1, 16), "size -1 is below the sorting minimum 1"),
    ("task.eval_sizes", (2, 4, 8), "no size above the training maximum 8"),
    ("task.eval_sizes", (2, 40), "size 40 needs sequence length 80 > model.max_len 64"),
    ("model.max_len", 20, "needs sequence length 32 > model.max_len 20"),
    ("model.d_model", 30, "model.d_model 30 must be a positive multiple of 2 * model.num_heads"),
    ("model.d_model", 0, "model.d_model 0 must be a positive multiple"),
    ("model.num_heads", 0, "must be a positive multiple of 2 * model.num_heads"),
    ("model.k_max", 0, "model.k_max >= 1"),
    ("model.prelude_layers", -1, "model.prelude_layers >= 0"),
    ("model.remat", "some", "model.remat must be one of none, full, dots, got 'some'"),
    ("model.positions", "learned", "model.positions must be one of rope, none"),
    ("model.dtype", "float16", "model.dtype must be one of float32, bfloat16, got 'float16'"),
    ("halting.penalty", "l2", "unknown halting.penalty 'l2'"),
    ("halting.output", "logits", "halting.output must be one of state, distribution"),
    ("halting.supervision", "oracle",
     "halting.supervision must be one of penalty, correctness, got 'oracle'"),
    ("halting.exit_rule", "oracle", "halting.exit_rule must be one of unit, readout, got 'oracle'"),
    ("halting.exit_rule", "readout", "it needs the online variant anira_o and "
     "halting.supervision=correctness"),   # the supervision is "penalty" here
    ("halting.exit_confidence", 0.0, "halting.exit_confidence must be in (0, 1]"),
    ("halting.exit_stability", -0.1, "halting.exit_stability >= 0"),
    ("halting.threshold", 1.0, "halting.threshold must be in [0, 1)"),
    ("halting.threshold", -0.1, "halting.threshold must be in [0, 1)"),
    ("halting.temperature", 0.0, "halting.temperature must be positive"),
    ("halting.prior_lambda", 0.0, "halting.prior_lambda must be in (0, 1)"),
    ("halting.prior_lambda", 1.0, "halting.prior_lambda must be in (0, 1)"),
    ("train.steps", -1, "train.steps must be >= 0, got -1"),
    ("train.batch_size", 0, "train.batch_size must be positive, got 0"),
    ("train.batch_size", -4, "train.batch_size must be positive, got -4"),
    ("train.log_every", 0, "train.log_every must be positive"),
    ("train.eval_every", 0, "train.eval_every must be positive"),
    ("train.checkpoint_every", 0, "train.checkpoint_every must be positive"),
    ("eval.examples", 0, "eval.examples must be positive"),
    ("parallel.mode", "pjit", "parallel.mode must be one of shard_map, pmap, got 'pjit'"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_value_raises_config_error(key, value, message):
  c = _config_module().get_config("anira_o")
  *path, leaf = key.split(".")
  node = c
  for part in path:
    node = node[part]
  if isinstance(value, dict):
    node[leaf] = type(node[leaf])(value)
  else:
    with node.ignore_type():
      node[leaf] = value
  with pytest.raises(config.ConfigError) as e:
    config.validate(c)
  assert message in str(e.value)
  assert "\n" not in str(e.value)


def test_tiny_config_overrides_validate():
  c = tiny_config("transformer", model__k_max=2)
  assert config.validate(c).name == "sorting"
  assert c.model.k_max == 2 and c.model.variant == "transformer"


def test_a_registered_penalty_is_valid_and_the_error_lists_the_registry(depth_squared_penalty):
  assert config.validate(tiny_config(halting__penalty=depth_squared_penalty)).name == "sorting"
  c = tiny_config()
  c.halting.penalty = "l2"
  with pytest.raises(config.ConfigError, match="unknown halting.penalty 'l2'; valid .*: ponder, "
                                               "kl_geometric, kl_uniform, depth_squared$"):
    config.validate(c)


def test_a_size_beyond_the_family_s_own_bound_is_one_line():
  # Graph sizes are node counts, at most task.options.max_nodes: refused before any training.
  c = config.default("graph", "anira_o")
  c.task.options.max_nodes = 6
  c.task.train_sizes, c.task.eval_sizes = (2, 4), (4, 8)
  with pytest.raises(config.ConfigError) as e:
    config.validate(c)
  assert str(e.value) == ("task 'graph' needs sizes <= max_nodes=6, got 8; change "
                          "task.train_sizes or task.eval_sizes")
