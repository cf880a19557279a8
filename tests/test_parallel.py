"""parallel.py: pmap, shard_map over 2 devices and a single device train the same model."""
import jax
import numpy as np
import pytest

from anira_jax import parallel, train
from anira_jax.errors import UserError
from conftest import last_metrics, tiny_config


def test_two_cpu_devices():
  assert jax.device_count() == 2   # XLA_FLAGS of conftest.py took effect


def test_unknown_mode_raises():
  with pytest.raises(ValueError, match="unknown parallel mode 'pjit'"):
    parallel.DataParallel("pjit", lambda s, b: (s, b))


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_put_batch_splits_rows_over_devices(mode):
  dp = parallel.DataParallel(mode, lambda s, b: (s, b))
  batch = {"x": np.arange(8 * 3).reshape(8, 3)}
  placed = dp.put_batch(batch)
  if mode == "pmap":
    assert placed["x"].shape == (2, 4, 3)
    np.testing.assert_array_equal(placed["x"][1], batch["x"][4:])
  else:
    shards = sorted(placed["x"].addressable_shards, key=lambda s: s.index[0].start)
    assert [s.data.shape for s in shards] == [(4, 3), (4, 3)]
    np.testing.assert_array_equal(np.asarray(shards[1].data), batch["x"][4:])
  assert dp.process_slice(8) == slice(0, 8)


def test_pmap_shard_map_and_one_device_agree(tmp_path):
  runs = {
      "pmap": (tiny_config("anira_o", train__steps=20, parallel__mode="pmap"), None),
      "shard_map": (tiny_config("anira_o", train__steps=20), None),
      "one_device": (tiny_config("anira_o", train__steps=20), jax.devices()[:1]),
  }
  losses = {}
  for name, (cfg, devices) in runs.items():
    workdir = tmp_path / name
    workdir.mkdir()
    train.train_and_evaluate(cfg, str(workdir), devices=devices)
    m = last_metrics(workdir)
    assert m["step"] == 20
    losses[name] = m["loss"]
  ref = losses["one_device"]
  for name, loss in losses.items():
    assert abs(loss - ref) / abs(ref) < 1e-4, losses


def test_pmap_with_several_processes_is_refused_naming_shard_map(monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(UserError) as e:
    parallel.DataParallel("pmap", lambda s, b: (s, b))
  assert str(e.value) == (
      "parallel.mode=pmap runs in one process only (jax.pmap over each process's devices would "
      "average gradients within a process); with 2 processes use parallel.mode=shard_map")
  assert parallel.DataParallel("shard_map", lambda s, b: (s, b), jax.devices()).mode == "shard_map"
