"""What the build is: ``atomrelay --version`` (release, git commit, Python, Twisted) and what a frozen build
changes for the programs it runs."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

from atomrelay import __version__

COMMIT_FILE = "COMMIT"
"""Written beside this module into the frozen bundle by ``atomrelay.spec``: the commit it was built from."""


def source_commit(root: Path) -> str | None:
    """The commit checked out at ``root`` (``-dirty`` if tracked files differ), or None if ``root``
    is not the top of a git checkout (an installed package, or git missing)."""
    try:
        top, head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True).stdout.split()
        if Path(top).resolve() != root.resolve():
            return None
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if changed.strip() else "")


def version_text() -> str:
    """``atomrelay 0.1.0 (commit 0123456789ab, Python 3.11.2, Twisted 24.7.0)``."""
    import twisted

    here = Path(__file__).resolve().parent
    embedded = here / COMMIT_FILE
    commit = embedded.read_text(encoding="utf-8").strip() if embedded.is_file() else source_commit(here.parent)
    return (f"atomrelay {__version__} (commit {commit or 'unknown'}, Python {platform.python_version()}, "
            f"Twisted {twisted.__version__})")


class VersionAction(argparse.Action):
    """``--version``: print :func:`version_text` and exit (asks git only when given)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version, the git commit, Python's and Twisted's versions, and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def child_environ(environ: Mapping[str, str] | None = None, frozen: bool | None = None) -> dict[str, str]:
    """The environment for programs the relay runs: in a frozen build, without the bundle's library path."""
    env = dict(os.environ if environ is None else environ)
    if getattr(sys, "frozen", False) if frozen is None else frozen:
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is not None:
            env["LD_LIBRARY_PATH"] = original
        else:
            env.pop("LD_LIBRARY_PATH", None)
    return env
