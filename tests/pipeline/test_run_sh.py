"""run.sh installs only when the install is missing or its inputs changed.

The real run.sh runs against a copy of the project skeleton it needs (run.sh, a tiny pyproject with
a ``dev`` extra, requirements.txt, a one-module package, a one-stage DVC project and a one-test
file), with STF_VENV pointing at a fresh temporary environment. That environment sees this test
environment's packages through a ``.pth`` line (pip, setuptools, pytest, dvc: nothing downloaded),
and pip runs for real (``STF_PIP_ARGS=--no-index --no-build-isolation --no-deps``: offline).
What is checked is what run.sh prints and what ends up installed in the temporary environment.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from dvc_helpers import env, git_init, run

ROOT = Path(__file__).resolve().parents[2]

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "runsh-probe"
version = "0.1"
dynamic = ["dependencies"]

[project.optional-dependencies]
dev = []

[tool.setuptools.dynamic]
dependencies = {file = ["requirements.txt"]}

[tool.setuptools]
py-modules = ["runsh_probe"]
"""


def _run_sh(proj: Path, venv: Path, *args: str) -> subprocess.CompletedProcess:
    e = env()
    e.update(STF_VENV=str(venv), STF_PIP_ARGS="--no-index --no-build-isolation --no-deps",
             PIP_DISABLE_PIP_VERSION_CHECK="1")
    e.pop("VIRTUAL_ENV", None)
    e.pop("PYTHONPATH", None)
    p = subprocess.run(["./run.sh", *args], cwd=proj, env=e, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"run.sh {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def _installed(venv: Path) -> set[str]:
    site = next(venv.glob("lib/python*/site-packages"))
    return {d.name.split("-")[0] for d in site.glob("*.dist-info")}


@pytest.mark.timeout(300)
def test_run_sh_installs_only_when_inputs_change(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy2(ROOT / "run.sh", proj / "run.sh")
    (proj / "pyproject.toml").write_text(PYPROJECT)
    (proj / "requirements.txt").write_text("")
    (proj / "runsh_probe.py").write_text("VALUE = 1\n")
    (proj / "test_probe.py").write_text("def test_probe():\n    import runsh_probe\n    assert runsh_probe.VALUE == 1\n")
    (proj / "dvc.yaml").write_text("stages:\n  probe:\n    cmd: python -c \"import runsh_probe; "
                                   "open('out.txt', 'w').write(str(runsh_probe.VALUE))\"\n    outs: [out.txt]\n")
    git_init(proj)
    run(["dvc", "init", "-q"], proj)

    # a fresh environment without its own pip that sees this one's packages (no download, ~1 s)
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=120)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "zz_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # run.sh puts the venv's bin first; `dvc` comes from this environment's bin (dvc_helpers.env())

    first = _run_sh(proj, venv, "demo")
    assert "run.sh: installing ." in first.stderr and "up to date" not in first.stderr
    assert "runsh_probe" in _installed(venv)
    assert (proj / "out.txt").read_text() == "1"            # dvc repro ran, with the venv's python

    again = _run_sh(proj, venv, "demo")
    assert "run.sh: install up to date" in again.stderr and "installing" not in again.stderr

    test = _run_sh(proj, venv, "test", "-q", "-p", "no:cacheprovider", "test_probe.py")   # demo -> test: the dev extra
    assert "run.sh: installing .[dev]" in test.stderr
    assert "1 passed" in test.stdout
    for mode in (["test", "-q", "-p", "no:cacheprovider", "test_probe.py"], ["demo"]):   # dev covers demo too
        p = _run_sh(proj, venv, *mode)
        assert "run.sh: install up to date" in p.stderr and "installing" not in p.stderr

    (proj / "pyproject.toml").write_text(PYPROJECT + "# a changed input\n")
    changed = _run_sh(proj, venv, "demo")
    assert "run.sh: installing ." in changed.stderr
    (proj / "requirements.txt").write_text("# no dependencies\n")
    assert "run.sh: installing .[dev]" in _run_sh(proj, venv, "test", "-q", "-p", "no:cacheprovider",
                                                  "test_probe.py").stderr

    # a removed stamp (e.g. an interrupted install) installs again, and so does a removed install
    (venv / ".stfmamba-install").unlink()
    assert "run.sh: installing ." in _run_sh(proj, venv, "demo").stderr
    assert "run.sh: install up to date" in _run_sh(proj, venv, "demo").stderr
    for d in site.glob("runsh_probe-*.dist-info"):
        shutil.rmtree(d)
    assert "run.sh: installing ." in _run_sh(proj, venv, "demo").stderr
    assert "runsh_probe" in _installed(venv)


def test_run_sh_usage(tmp_path):
    p = subprocess.run([str(ROOT / "run.sh"), "nonsense"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, STF_VENV=str(tmp_path / "never_created")))
    assert p.returncode == 2 and "usage" in p.stderr
    assert not (tmp_path / "never_created").exists()       # no environment made for a usage error
