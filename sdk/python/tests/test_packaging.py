"""The wheel: it builds, and holds the package with its py.typed marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from hubproc import SDK_DIR

import alkhub


def test_wheel_contains_the_package_and_py_typed(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(tmp_path), str(SDK_DIR)],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("alkhub-*.whl")
    assert wheel.name.startswith(f"alkhub-{alkhub.__version__}-py3-none-any")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"alkhub/{p.name}" for p in (SDK_DIR / "src" / "alkhub").glob("*.py")}
    assert {"alkhub/__init__.py", "alkhub/py.typed"} | modules <= names
    assert not any(name.startswith(("tests/", "examples/")) for name in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: websockets" in text
    assert "Requires-Python: >=3.11" in text
