"""colabs/: each notebook runs headless top to bottom on the CPU with its tiny switch, from its
own folder as Jupyter runs it, and is committed without outputs; its Colab set-up cell can run
twice."""
import json
import os
import subprocess
import sys
import types

import nbclient
import nbformat
import pytest

from conftest import REPO, child_env

# With test_reproduce: one worker runs the shared reproduce_ci fixture once (pytest-xdist).
pytestmark = pytest.mark.xdist_group("reproduce_ci")


NOTEBOOKS = ("quickstart.ipynb", "analysis.ipynb")


def _execute(name: str, monkeypatch, **env) -> nbformat.NotebookNode:
  for key, value in {**child_env(), "ANIRA_NOTEBOOK_TINY": "1", **env}.items():
    monkeypatch.setenv(key, value)
  book = nbformat.read(REPO / "colabs" / name, as_version=4)
  nbclient.NotebookClient(book, timeout=240, kernel_name="python3",
                          resources={"metadata": {"path": str(REPO / "colabs")}}).execute()
  return book


def _code(name: str) -> list[str]:
  book = nbformat.read(REPO / "colabs" / name, as_version=4)
  return [cell.source for cell in book.cells if cell.cell_type == "code"]


def _outputs(book, kind: str) -> list[str]:
  """Texts of the stream outputs, or the payloads of one display MIME type, in order."""
  found = []
  for cell in book.cells:
    for out in cell.get("outputs", []):
      if kind == "stream" and out["output_type"] == "stream":
        found.append(out["text"])
      elif kind in out.get("data", {}):
        found.append(out["data"][kind])
  return found


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
  book = json.loads((REPO / "colabs" / name).read_text())
  code = [c for c in book["cells"] if c["cell_type"] == "code"]
  assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
  source = "".join("".join(c["source"]) for c in code)
  assert '"google.colab" in sys.modules' in source and "jax.devices()" in source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_colab_setup_cell_asks_for_the_url_and_can_run_twice(name, tmp_path, monkeypatch):
  settings, setup = _code(name)[:2]
  calls = []

  def run(cmd, check):
    assert check
    calls.append(cmd)
    if cmd[:2] == ["git", "clone"]:
      os.makedirs(cmd[-1])
    return subprocess.CompletedProcess(cmd, 0)

  monkeypatch.setattr(subprocess, "run", run)
  monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
  monkeypatch.setattr(sys, "path", list(sys.path))
  monkeypatch.chdir(tmp_path)
  scope = {}
  exec(settings, scope)  # pylint: disable=exec-used
  with pytest.raises(ValueError, match="set REPO_URL in the first code cell"):
    exec(setup, scope)  # pylint: disable=exec-used
  scope["REPO_URL"] = "https://example.org/anira_jax.git"
  for _ in range(2):
    exec(setup, scope)  # pylint: disable=exec-used
  clone = str(tmp_path / "anira_jax")
  assert calls == [["git", "clone", "--depth=1", "https://example.org/anira_jax.git", clone],
                   [sys.executable, "-m", "pip", "install", "-q", "-e", clone]]
  assert sys.path.count(clone) == 1 and os.getcwd() == str(tmp_path)


def test_quickstart_trains_on_all_devices_and_plots(tmp_path, monkeypatch):
  workdir = tmp_path / "quickstart"
  book = _execute("quickstart.ipynb", monkeypatch, ANIRA_NOTEBOOK_WORKDIR=str(workdir))
  text = "".join(_outputs(book, "stream"))
  assert "2 CPU device(s)" in text                    # conftest's two forced CPU devices
  assert "size   8 out: sequence accuracy" in text and "Spearman(depth, stack_depth) = " in text
  assert len(_outputs(book, "image/png")) == 2
  assert json.loads((workdir / "eval.json").read_text())["step"] == 30
  assert (workdir / "depth_vs_stack_depth.png").stat().st_size > 10_000


def test_analysis_loads_runs_and_reproduces_plots(reproduced_ci, monkeypatch):
  out, proc = reproduced_ci
  assert proc.returncode == 0, proc.stderr
  book = _execute("analysis.ipynb", monkeypatch, ANIRA_NOTEBOOK_OUT=str(out))
  assert "".join(_outputs(book, "stream")).count("finished earlier") == 10   # loaded, not trained
  markdown = "".join(_outputs(book, "text/markdown"))
  assert "### alignment: " in markdown and "### Spearman(depth, feature)" in markdown
  assert len(_outputs(book, "image/png")) == len(list((out / "plots").iterdir())) == 18
  assert sorted(p.name for p in (out / "notebook_plots").iterdir()) == sorted(
      p.name for p in (out / "plots").iterdir())
