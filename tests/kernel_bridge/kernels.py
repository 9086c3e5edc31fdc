"""Which kernels this machine has, judged the way the daemon judges it."""

from __future__ import annotations

import tempfile

import pytest
from jupyter_client.kernelspec import NoSuchKernel

from kernel_bridge import languages

# The daemon provides specs for pip-installed kernel packages (bash_kernel);
# do the same here so the tests see what the daemon sees.
languages.provide_package_kernels(tempfile.mkdtemp(prefix="envd-test-kernels-"))


def require_kernel(language: str) -> None:
    """Skip, with the reason printed, when `language` has no kernel here."""
    try:
        languages.resolve_kernel_spec(language)
    except NoSuchKernel:
        pytest.skip(f"no Jupyter kernel for {language!r} is installed on this machine")
