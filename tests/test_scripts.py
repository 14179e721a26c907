"""scripts/test.sh on a machine that lacks what the suite uses (issue 31): one line per missing
tool with the package that brings it, before any test runs; and the throwaway PostgreSQL it
starts is stopped however the suite ends."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from service_support import free_port

REPO = Path(__file__).resolve().parent.parent


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGATE_REQUIRE_")}
    env.pop("FACEGATE_TEST_POSTGRES_URL", None)
    return env | extra


def test_missing_tools_are_named_one_line_each_before_any_test_runs():
    proc = subprocess.run(["bash", "scripts/test.sh", "tests/test_layers.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=120,
                          env=_env(FACEGATE_TOOLS_ROOT="/nonexistent", FACEGATE_NO_APT="1",
                                   FACEGATE_REQUIRE_IMAGE="1", FACEGATE_REQUIRE_BROWSER="1"))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    for tool, package in (("iptables", "iptables"), ("netavark", "netavark"), ("podman", "podman"),
                          ("promtool", "prometheus"), ("chromium", "chromium"), ("nginx", "nginx")):
        mine = [line for line in lines if line.startswith(f"missing: {tool} ")]
        assert len(mine) == 1 and f"apt-get install -y {package}" in mine[0], (tool, proc.stderr)
    assert "passed" not in proc.stdout and "collected" not in proc.stdout


def _postgres_running(port: int) -> bool:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return any(line.startswith(("postgres", "/usr/lib/postgresql")) and f"-p {port}" in line
               for line in out.splitlines())


@pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/bin/initdb") or os.geteuid() != 0,
                    reason="needs PostgreSQL's initdb and root (runuser postgres), as scripts/test.sh does")
@pytest.mark.parametrize("ending", ["passes", "fails", "is_stopped"])
def test_the_throwaway_postgresql_is_stopped_however_the_suite_ends(ending):
    port = free_port()
    env = _env(FACEGATE_PG_PORT=str(port), FACEGATE_NO_APT="1")
    if ending == "is_stopped":
        # a pytest that never ends on its own: the script is stopped from outside while it runs
        proc = subprocess.Popen(["bash", "scripts/test.sh", "-q", "-p", "no:cacheprovider", "tests/test_scripts.py",
                                 "-k", "test_sleeper"],
                                cwd=REPO, env=env | {"FACEGATE_TEST_SLEEP": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline and not _postgres_running(port):
            time.sleep(0.5)
        assert _postgres_running(port), "scripts/test.sh did not start PostgreSQL"
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        assert proc.returncode != 0
    else:
        args = ["--co", "-q", "tests/test_layers.py"] if ending == "passes" else ["-q", "tests/no_such_test_file.py"]
        proc = subprocess.run(["bash", "scripts/test.sh", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert "cluster in" in proc.stderr, proc.stderr[-2000:]
        assert (proc.returncode == 0) == (ending == "passes"), proc.stdout[-2000:] + proc.stderr[-2000:]
    time.sleep(1)
    assert not _postgres_running(port)


if os.environ.get("FACEGATE_TEST_SLEEP") == "1":
    def test_sleeper():                        # only collected inside the stopped run above
        time.sleep(600)
