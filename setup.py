"""Build hook: compile the parser's hot loop with mypyc where a C compiler is available.

Everything else about the package is in pyproject.toml. The compiled module
(``tmi_cluster/irc/_split.py``) is an optimisation only: when mypyc or a C compiler is missing,
or ``TMI_CLUSTER_PURE_PYTHON=1`` is set, the package installs as pure Python and behaves the same.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = ["src/tmi_cluster/irc/_split.py"]


class OptionalBuildExt(build_ext):
    """Build the extensions if possible; fall back to pure Python on any build failure."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            _warn(exc)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _warn(exc)


def _warn(exc: BaseException) -> None:
    print(f"tmi-cluster: compiled parser not built ({exc}); using pure Python", file=sys.stderr)


def _extensions() -> list[Any]:
    if os.environ.get("TMI_CLUSTER_PURE_PYTHON") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    try:
        # An empty mypy configuration: the project's (pydantic plugin) is for the whole code
        # base and needs packages that the isolated build environment does not have.
        options = ["--config-file", os.devnull, "--follow-imports=skip", "--ignore-missing-imports"]
        return list(mypycify([*options, *COMPILED], opt_level="3", verbose=False))
    except (Exception, SystemExit) as exc:
        _warn(exc)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
