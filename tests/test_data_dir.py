"""A data folder the process may not own (a bind mount of a host folder owned by root) is one line
on stderr naming the process's uid and the fixes, and a non-zero exit: never a traceback."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from facegate.cli import main

NOBODY = 65534


def _refuse_chmod(monkeypatch, folder: Path) -> None:
    real = os.chmod

    def chmod(path, mode, *a, **kw):
        if Path(path) == folder:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        return real(path, mode, *a, **kw)

    monkeypatch.setattr(os, "chmod", chmod)


def _one_line_naming_the_fix(stderr: str, uid: int) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("facegate: error: data_dir_not_writable: "), line
    assert f"uid {uid} " in line and f"chown -R {uid}:" in line and "named volume" in line, line
    return line


@pytest.fixture
def data_env(tmp_path, monkeypatch) -> Path:
    for name in ("FACEGATE_DATABASE_URL", "FACEGATE_DATA_KEY", "FACEGATE_DATA_KEY_FILE", "FACEGATE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("FACEGATE_DATA_DIR", str(folder))
    return folder


@pytest.mark.parametrize("argv", [["serve"], ["keys", "list"], ["audit", "verify"]])
def test_a_data_folder_that_cannot_be_made_private_is_one_line(argv, data_env, monkeypatch, capsys):
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: started.append(a))
    _refuse_chmod(monkeypatch, data_env)
    assert main(argv) == 2
    line = _one_line_naming_the_fix(capsys.readouterr().err, os.getuid())
    assert str(data_env) in line
    assert not started, "serve must stop before uvicorn starts"


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a folder owned by root and runs facegate as another uid")
def test_serve_as_another_uid_on_a_root_owned_folder():
    """The real EPERM: ``facegate serve`` as uid 65534 on a folder that root owns (as the image's
    uid 10001 on a bind-mounted host folder)."""
    parent = Path(tempfile.mkdtemp(prefix="facegate-foreign-"))
    try:
        parent.chmod(0o755)
        folder = parent / "data"
        folder.mkdir(mode=0o755)
        # The interpreter may live where uid 65534 cannot read (/root/.pyenv): import what serve
        # needs as root, then drop to the other uid.
        code = ("import os, sys, uvicorn\n"
                "from facegate.cli import build_parser, main\n"
                "import facegate.storage.private, facegate.config\n"
                "build_parser()\n"
                f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n"
                "sys.exit(main(['serve']))\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGATE_")} | {
            "FACEGATE_DATA_DIR": str(folder), "FACEGATE_PORT": "1"}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                              cwd=parent)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        line = _one_line_naming_the_fix(proc.stderr, NOBODY)
        assert "belongs to uid 0" in line, line
        assert folder.stat().st_mode & 0o777 == 0o755 and not any(folder.iterdir())
    finally:
        shutil.rmtree(parent, ignore_errors=True)
