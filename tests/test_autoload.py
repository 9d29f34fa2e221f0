"""Opt-in autoloading: one marked line in the profile's config, and the magic works unloaded."""

from __future__ import annotations

import subprocess
import sys

from ollama_magic import autoload


def test_install_is_idempotent_and_uninstall_restores_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    path = autoload.config_file()
    path.parent.mkdir(parents=True)
    path.write_text("c.InteractiveShell.colors = 'nocolor'\n")
    autoload.install()
    autoload.install()
    assert path.read_text().count(autoload.LINE) == 1
    autoload.uninstall()
    assert path.read_text() == "c.InteractiveShell.colors = 'nocolor'\n"


def test_the_magic_loads_on_first_use(tmp_path, fake_ollama):
    env = {"IPYTHONDIR": str(tmp_path), "OLLAMA_HOST": fake_ollama.url, "PATH": ""}
    subprocess.run([sys.executable, "-m", "ollama_magic.autoload", "install"], env=env, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "-c", "%ollama status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "server: Ollama 0.33.0" in result.stdout, result.stdout + result.stderr
