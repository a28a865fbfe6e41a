"""Helpers for the pipeline tests: git/dvc subprocesses and a real WebDAV server on 127.0.0.1.

(A uniquely named module, not conftest.py, so that ``from dvc_helpers import ...`` never picks up
another test folder's conftest.)
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "test",
           "GIT_COMMITTER_EMAIL": "test@example.com", "DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATER": "1"}


def env() -> dict[str, str]:
    e = dict(os.environ, **GIT_ENV)
    bindir = str(Path(sys.executable).parent)  # `python` in stage commands = this interpreter's venv
    e["PATH"] = bindir + os.pathsep + e.get("PATH", "")
    return e


def run(args: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command (``dvc ...`` goes through this interpreter's dvc); fail with its output."""
    if args[0] == "dvc":
        args = [sys.executable, "-m", "dvc", *args[1:]]
    p = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def git_init(path: Path) -> None:
    run(["git", "init", "-q", "-b", "main"], path)
    run(["git", "config", "user.email", "test@example.com"], path)
    run(["git", "config", "user.name", "test"], path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDAVServer:
    """wsgidav + cheroot serving ``root`` on 127.0.0.1 (anonymous read/write), in a thread.

    ``put_delay`` seconds are waited before each PUT (a slow link), so a test can interrupt an
    upload half-way on any machine.
    """

    def __init__(self, root: Path, put_delay: float = 0.0):
        from cheroot import wsgi
        from wsgidav.wsgidav_app import WsgiDAVApp
        self.root, self.port = root, free_port()
        config = {"host": "127.0.0.1", "port": self.port, "provider_mapping": {"/": str(root)},
                  "simple_dc": {"user_mapping": {"*": True}}, "http_authenticator": {"domain_controller": None},
                  "verbose": 0, "logging": {"enable": False}, "lock_storage": True, "property_manager": True}
        dav = WsgiDAVApp(config)

        def app(environ, start_response):
            if put_delay and environ.get("REQUEST_METHOD") == "PUT":
                time.sleep(put_delay)
            return dav(environ, start_response)

        self.server = wsgi.Server(("127.0.0.1", self.port), app, numthreads=8)
        self.thread = threading.Thread(target=self.server.start, daemon=True)

    def url(self, folder: str) -> str:
        return f"webdav://127.0.0.1:{self.port}/{folder}"

    def __enter__(self) -> "WebDAVServer":
        self.thread.start()
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("WebDAV server did not start")

    def __exit__(self, *exc) -> None:
        self.server.stop()
        self.thread.join(timeout=10)
