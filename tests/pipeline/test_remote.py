"""DVC remote round trip against a real WebDAV server on 127.0.0.1 (wsgidav + dvc-webdav).

A small DVC project whose stage writes a tree of binary files (stand-ins for crops, landmarks and
checkpoints): push, fresh clone, pull, nothing to re-run; then a push killed half-way is
completed by a second push.
"""
import os
import signal
import subprocess
import sys
import time

from dvc_helpers import env, git_init, run

MAKE = """\
import os, sys
import numpy as np
n, size = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(n)
os.makedirs("out/crops", exist_ok=True)
for i in range(n):
    with open(f"out/crops/{i:04d}.bin", "wb") as fh:
        fh.write(rng.integers(0, 255, size, dtype=np.uint8).tobytes())
with open("out/model.pt", "wb") as fh:
    fh.write(rng.integers(0, 255, 4 * size, dtype=np.uint8).tobytes())
"""


def _project(path, n, size):
    path.mkdir()
    git_init(path)
    run(["dvc", "init", "-q"], path)
    (path / "make.py").write_text(MAKE)
    (path / "dvc.yaml").write_text(f"stages:\n  make:\n    cmd: python make.py {n} {size}\n"
                                   "    deps: [make.py]\n    outs: [out]\n")
    run(["dvc", "repro"], path)
    run(["git", "add", "."], path)
    run(["git", "commit", "-qm", "project"], path)


def _status_clean(path):
    assert "up to date" in run(["dvc", "status"], path).stdout.lower()


def test_push_clone_pull_nothing_to_rerun(tmp_path, webdav):
    (webdav.root / "store").mkdir()  # WebDAV does not create missing parent folders
    proj = tmp_path / "proj"
    _project(proj, n=20, size=2000)
    run(["dvc", "remote", "add", "-d", "dav", webdav.url("store")], proj)
    run(["git", "commit", "-qam", "remote"], proj)
    run(["dvc", "push"], proj)
    assert any((webdav.root / "store").rglob("*")), "nothing arrived on the server"

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(proj), str(clone)], tmp_path)
    assert not (clone / "out").exists()
    run(["dvc", "pull"], clone)
    assert sorted(os.listdir(clone / "out" / "crops")) == sorted(os.listdir(proj / "out" / "crops"))
    assert (clone / "out" / "model.pt").read_bytes() == (proj / "out" / "model.pt").read_bytes()
    _status_clean(clone)
    assert "Stage 'make' didn't change" in run(["dvc", "repro"], clone).stdout


def test_interrupted_push_is_completed_by_second_push(tmp_path, slow_webdav):
    webdav = slow_webdav
    (webdav.root / "store").mkdir()
    proj = tmp_path / "proj"
    _project(proj, n=80, size=20000)
    run(["dvc", "remote", "add", "-d", "dav", webdav.url("store")], proj)
    run(["git", "commit", "-qam", "remote"], proj)
    store = webdav.root / "store"

    p = subprocess.Popen([sys.executable, "-m", "dvc", "push", "-j", "1"], cwd=proj, env=env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if sum(1 for f in store.rglob("*") if f.is_file()) >= 10:
            break
        time.sleep(0.05)
    assert p.poll() is None, "push finished before it could be interrupted; raise the file count"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    partial = sum(1 for f in store.rglob("*") if f.is_file())
    assert 0 < partial < 81, partial

    assert "not in cache" not in run(["dvc", "status", "-c"], proj).stdout
    assert "new:" in run(["dvc", "status", "-c"], proj).stdout  # the remote is incomplete
    run(["dvc", "push"], proj)
    assert "in sync" in run(["dvc", "status", "-c"], proj).stdout

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(proj), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    assert len(os.listdir(clone / "out" / "crops")) == 80
    _status_clean(clone)
