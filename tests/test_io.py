"""The one atomic-write helper: the target is either the old or the new file, never torn, no leftovers."""
import os

import numpy as np
import pytest

from stfmamba import io


def test_replaces_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "a.json"
    io.write_json(target, {"x": 1})
    io.write_json(target, {"x": 2})
    assert target.read_text() == '{\n  "x": 2\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_keeps_old_file_and_removes_temp(tmp_path, exc):
    target = tmp_path / "a.txt"
    io.write_text(target, "old")
    with pytest.raises(exc):
        with io.atomic_open(target) as fh:
            fh.write("half of the new")
            raise exc("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temp_keeps_suffix_for_writers_that_choose_format_by_name(tmp_path):
    target = tmp_path / "crops.npz"
    with io.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npz"
        np.savez(tmp, a=np.arange(3))  # np.savez would append .npz to any other name
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["crops.npz"]


def test_writer_that_creates_nothing_is_an_error(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(FileNotFoundError, match="x.bin"):
        with io.atomic_path(target) as tmp:
            tmp.unlink()
    assert not target.exists()


def test_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    order = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append("replace"), real_replace(a, b))[1])
    io.write_bytes(tmp_path / "b.bin", b"123")
    assert order[:2] == ["fsync", "replace"]


def test_text_mode_only_whole_files(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with io.atomic_open(tmp_path / "a", "a"):
            pass


def test_permissions_are_those_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    io.write_text(tmp_path / "atomic", "x")
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
