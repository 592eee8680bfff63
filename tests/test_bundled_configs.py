"""The configs shipped in config/ are valid, and the default one serves the demo."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import in_reactor
import pytest
import yaml
from pb_client import login
from pbd_daemon import run_pbd

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_bundled_config_passes_check_config(path, tmp_path):
    # config/systemd.yaml names the users.passwd an operator creates beside it.
    shutil.copytree(path.parent, tmp_path, dirs_exist_ok=True)
    (tmp_path / "users.passwd").touch()
    copy = tmp_path / path.name
    result = run_pbd("check-config", str(copy))
    assert result.returncode == 0, result.stderr
    assert f"{copy}: OK" in result.stdout


def _on_free_ports(path: Path) -> dict:
    config = yaml.safe_load(path.read_text())
    for listener in config["listeners"]:
        listener["endpoint"] = re.sub(r"^tcp:\d+", "tcp:0", listener["endpoint"])
    return config


def test_default_config_serves_guest_and_anonymous_echo_and_guest_chat(start_daemon):
    daemon = start_daemon(_on_free_ports(REPO / "config" / "pbd.yaml"))
    assert all(address.startswith("127.0.0.1:") for _, _, address in daemon.addresses())

    async def session():
        factory, guest = await login(daemon.port("echo"), "guest", "guest")
        anonymous_factory, anonymous = await login(daemon.port("echo"))
        chat_factory, chatter = await login(daemon.port("chat"), "guest", "guest")
        try:
            return (
                await guest.callRemote("whoami"),
                await anonymous.callRemote("echo", "hello"),
                await chatter.callRemote("rooms"),
            )
        finally:
            for f in (factory, anonymous_factory, chat_factory):
                f.disconnect()

    assert in_reactor.run(session) == ("guest", "hello", ["lobby"])


def test_readme_client_example_runs(start_daemon, tmp_path):
    """The Python client shown in the README really logs in and calls echo."""
    daemon = start_daemon(_on_free_ports(REPO / "config" / "pbd.yaml"))
    readme = (REPO / "README.md").read_text()
    example = re.search(r"<!-- client-example -->\s*```python\n(.*?)```", readme, re.S)
    assert example, "README lost its client example"
    script = tmp_path / "client.py"
    script.write_text(example.group(1).replace("8787", str(daemon.port("echo"))))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hello, pbd", "guest"]
