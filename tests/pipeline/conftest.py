"""Fixtures of the pipeline tests: a real WebDAV server on 127.0.0.1 (helpers in dvc_helpers.py)."""
import pytest

from dvc_helpers import WebDAVServer


@pytest.fixture()
def webdav(tmp_path):
    root = tmp_path / "webdav_root"
    root.mkdir()
    with WebDAVServer(root) as server:
        yield server


@pytest.fixture()
def slow_webdav(tmp_path):
    root = tmp_path / "webdav_root"
    root.mkdir()
    with WebDAVServer(root, put_delay=0.05) as server:
        yield server
