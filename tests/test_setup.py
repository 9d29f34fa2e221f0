"""The README's setup commands, as a new user runs them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(os.geteuid() != 0, reason="tests/run installs Chromium only as root")
def test_installing_chromium_prints_two_lines_not_apts_output(tmp_path):
    # A stand-in apt-get that is as chatty as the real one on a fresh machine.
    fake = tmp_path / "bin"
    fake.mkdir()
    apt = fake / "apt-get"
    apt.write_text('#!/bin/sh\nfor i in $(seq 300); do echo "Get:$i http://deb.example $*"; done\n')
    apt.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "CHROMIUM": str(tmp_path / "no")}
    result = subprocess.run(
        ["bash", "tests/run", "--version"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Installing Debian's chromium for the browser tests (once;")
    assert lines[1].startswith("Installed chromium in ")
    assert "Get:" not in result.stdout + result.stderr
    log = ROOT / ".venv" / "apt-chromium.log"
    assert log.read_text().count("Get:") == 600  # apt-get update, then install
