"""Opt in (or out) of loading ollama-magic on first use of ``%ollama``, in every IPython kernel.

    python -m ollama_magic.autoload install [--profile NAME]
    python -m ollama_magic.autoload uninstall [--profile NAME]

It adds one marked line to the profile's ``ipython_config.py``, which both terminal IPython and
Jupyter kernels read: ``MagicsManager.lazy_magics`` loads the extension the first time the magic
is used, so nothing is imported at kernel start. Merging into the user's own file (instead of
shipping a config file in the package) avoids two traps: IPython reads no ``.d`` folders, so a
shipped file would overwrite another package's, and a profile that assigns the setting again
would silently win.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from IPython.paths import get_ipython_dir

BEGIN = "# >>> ollama-magic autoload >>>"
END = "# <<< ollama-magic autoload <<<"
LINE = 'c.MagicsManager.lazy_magics.update({"ollama": "ollama_magic"})'


def config_file(profile: str = "default") -> Path:
    """The profile's ``ipython_config.py`` (it need not exist yet)."""
    return Path(get_ipython_dir()) / f"profile_{profile}" / "ipython_config.py"


def install(profile: str = "default") -> Path:
    """Add the autoload block to the profile's config, once."""
    path = config_file(profile)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN not in text:
        path.parent.mkdir(parents=True, exist_ok=True)
        block = f"{BEGIN}\n{LINE}\n{END}\n"
        path.write_text(text + ("\n" if text and not text.endswith("\n") else "") + block, "utf-8")
    return path


def uninstall(profile: str = "default") -> Path:
    """Remove the autoload block again (the rest of the file stays)."""
    path = config_file(profile)
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        keep, inside = [], False
        for line in lines:
            if line.strip() == BEGIN:
                inside = True
            elif line.strip() == END:
                inside = False
            elif not inside:
                keep.append(line)
        path.write_text("".join(keep), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ollama_magic.autoload", description=__doc__)
    parser.add_argument("action", choices=["install", "uninstall"])
    parser.add_argument("--profile", default="default", help="IPython profile (default: default)")
    args = parser.parse_args(argv)
    path = (install if args.action == "install" else uninstall)(args.profile)
    done = "loads on first use of %ollama" if args.action == "install" else "no longer autoloads"
    print(f"ollama-magic {done} ({path}). Restart running kernels.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
