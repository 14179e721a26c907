"""The image on a bind-mounted host folder it may not own (``-v /srv/facegate:/var/lib/facegate``
with the folder owned by root): one line naming uid 10001 and the fixes, a non-zero exit, no
traceback; for the image's command (``facegate serve``) and for a CLI command that opens the
database."""
from __future__ import annotations

import uuid

import pytest

from .support import podman

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("command", [(), ("facegate", "keys", "list")], ids=["serve", "keys-list"])
def test_a_root_owned_host_folder_is_one_line_naming_uid_10001_and_the_fix(images, tmp_path, command):
    host = tmp_path / "facegate"
    host.mkdir(mode=0o755)          # root's here; under rootless podman the user's, which is root in the container
    name = f"facegate-bind-{uuid.uuid4().hex[:8]}"
    try:
        podman("run", "-d", "--name", name, "--read-only", "-v", f"{host}:/var/lib/facegate", images["facegate"],
               *command)
        code = int(podman("wait", name, timeout=180).stdout.strip())
        logs = podman("logs", name)
    finally:
        podman("rm", "-f", name, check=False)
    said = logs.stdout + logs.stderr
    assert code != 0, said
    assert "Traceback" not in said, said
    lines = said.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facegate: error: data_dir_not_writable: "), said
    assert "uid 10001 " in lines[0] and "chown -R 10001:10001 " in lines[0] and "named volume" in lines[0], lines[0]
    assert not any(host.iterdir())
