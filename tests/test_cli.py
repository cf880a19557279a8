"""cli.py: the one-line answers shared by every entry point."""
import subprocess
import sys

import pytest

from anira_jax import cli, errors
from conftest import REPO, _config_module, child_env


def test_unknown_key_names_the_closest_key_and_where_the_defaults_live():
  cfg = _config_module().get_config("anira_o")
  with pytest.raises(errors.UserError) as e:
    cli.override(cfg, "model.kmax", "4")
  assert str(e.value) == ("unknown config key 'model.kmax'; did you mean 'model.k_max'? "
                          "(valid keys and their defaults: anira_jax/config.py)")


def test_unknown_key_without_a_close_match_still_says_where_the_keys_are():
  message = cli.unknown_key(_config_module().get_config("anira_o"), "zzz.qqq")
  assert message == ("unknown config key 'zzz.qqq' (valid keys and their defaults: "
                     "anira_jax/config.py)")


def test_config_keys_lists_nested_keys():
  keys = cli.config_keys(_config_module().get_config("anira_o"))
  assert {"seed", "model", "model.k_max", "train.steps", "task.options.num_values"} <= set(keys)


@pytest.mark.parametrize("raised,status,stderr", [
    ("errors.UserError('bad input')", cli.EXIT_USAGE, "error: bad input\n"),
    ("errors.Stopped('rerun to resume')", cli.EXIT_REQUEUE, "stopped: rerun to resume\n"),
    ("KeyboardInterrupt()", cli.EXIT_INTERRUPTED, "interrupted\n"),
])
def test_run_answers_in_one_line_with_its_exit_status(raised, status, stderr):
  program = ("from anira_jax import cli, errors\n"
             "def main(argv):\n"
             f"  raise {raised}\n"
             "cli.run(main)\n")
  proc = subprocess.run([sys.executable, "-c", program], cwd=REPO, env=child_env(),
                        capture_output=True, text=True, timeout=120, check=False)
  assert (proc.returncode, proc.stderr) == (status, stderr)


def test_default_workdir_names_overrides_apart_from_where_the_run_executes():
  assert cli.default_workdir("sorting", "anira_o", {}) == "runs/sorting_anira_o"
  k4 = cli.default_workdir("sorting", "anira_o", {"model.k_max": 4, "train.steps": 300})
  assert k4.startswith("runs/sorting_anira_o_") and len(k4) == len("runs/sorting_anira_o_") + 8
  assert k4 == cli.default_workdir("sorting", "anira_o", {
      "train.steps": 300, "model.k_max": 4, "parallel.process_id": 1,
      "parallel.distributed": "explicit"})
  assert k4 != cli.default_workdir("sorting", "anira_o", {"model.k_max": 3, "train.steps": 300})
  assert cli.default_workdir("sorting", "anira_o", {"parallel.mode": "pmap"}) == (
      "runs/sorting_anira_o")


def test_how_the_loop_runs_is_left_out_of_the_default_workdir():
  plain = cli.default_workdir("sorting", "anira_o", {"train.steps": 300})
  assert plain == cli.default_workdir("sorting", "anira_o", {
      "train.steps": 300, "train.data_workers": 2, "train.prefetch": 4,
      "train.profile_steps": (10, 20), "train.tensorboard": True})
  assert plain != cli.default_workdir("sorting", "anira_o", {"train.steps": 300,
                                                             "train.batch_size": 32})


def test_result_lines_one_per_size_out_of_distribution_marked():
  m = {"sequence_accuracy": 0.5, "token_accuracy": 0.875, "mean_depth": 3.0, "depth_std": 1.25,
       "needed_mean_depth": 2.0, "needed_depth_std": 0.5}
  result = {"sizes": {"4": {**m, "in_distribution": True},
                      "12": {**m, "sequence_accuracy": 0.0, "in_distribution": False}}}
  assert cli.result_lines(result) == [
      "size   4: seq_acc 0.500 tok_acc 0.875 depth 3.00±1.25 needed 2.00±0.50",
      "size  12: seq_acc 0.000 tok_acc 0.875 depth 3.00±1.25 needed 2.00±0.50  (ood)"]
