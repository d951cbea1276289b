"""The import package lives under platform/ without shadowing the stdlib module of that name."""

import subprocess
import sys

from conftest import REPO


def test_stdlib_platform_is_not_shadowed_here():
    import platform

    assert hasattr(platform, "python_version"), platform.__file__
    assert "site-packages" not in (platform.__file__ or "") and str(REPO / "platform") not in (platform.__file__ or "")


def test_stdlib_platform_is_not_shadowed_from_repo_root():
    """Run from the repo root (where ./platform/ exists), as `python jobs/...` and `python -c` would."""
    code = "import platform, semi2i; print(platform.python_version()); print(semi2i.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert out[0].count(".") == 2
    assert out[1].startswith(str(REPO / "platform" / "semi2i"))
