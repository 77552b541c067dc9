"""``%pip install`` and ``!pip install`` in a cell install into the kernel's own environment.

The wheels are built here (a wheel is a zip of the package and its metadata) and installed
with ``--no-index``, so nothing is downloaded; each is removed again afterwards, so the
environment the tests run in stays as it was.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import rlm
from scripted_model import ipython, reply

INSTALL = Path(__file__).resolve().parents[1] / "install.sh"


def build_wheel(folder: Path, name: str, value: str) -> Path:
    """A pure-Python wheel of one module ``name`` with ``VALUE = value``."""
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": f"VALUE = {value!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: rlm-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Unique module names; uninstalled from this environment at the end."""
    made = [f"rlm_pip_probe_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    yield made
    subprocess.run(
        [sys.executable, "-m", "pip", "uninstall", "-y", "-q", *made],
        capture_output=True,
        timeout=120,
    )


async def test_a_cell_pip_installs_a_wheel_and_imports_it(
    model, rlm_env, tmp_path, names, monkeypatch
):
    # As an installed rlm sees it: the folder of its Python is not on the user's PATH.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    magic, shell = names
    first = build_wheel(tmp_path, magic, "from %pip")
    second = build_wheel(tmp_path, shell, "from !pip")
    cell = (
        f"%pip install -q --no-index --no-deps {first}\n"
        f"!pip install -q --no-index --no-deps {second}\n"
        f"import {magic}, {shell}\n"
        f"print({magic}.VALUE, '|', {shell}.VALUE)"
    )
    model.script(reply(None, ipython(cell)), reply("installed"))
    assert await rlm.run("install them") == "installed"
    result = model.requests[-1]["messages"][-1]["content"]
    assert "from %pip | from !pip" in result, result
    assert "No module named pip" not in result
    found = subprocess.run(
        [sys.executable, "-c", f"import {magic}, {shell}"], capture_output=True, timeout=60
    )
    assert found.returncode == 0  # in rlm's (the kernel's) environment, not elsewhere


@pytest.mark.timeout(600)  # uv installs rlm into a private tool dir (cached: seconds, loaded: more)
def test_install_with_packages_and_pip_in_the_installed_kernel(model, rlm_env, tmp_path, names):
    """``./install.sh --with`` (and ``RLM_KERNEL_PACKAGES``) put packages where the kernel
    imports them; the installed rlm's kernel has pip, so ``%pip install`` works there too."""
    kept, added = names
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env |= {
        "UV_TOOL_DIR": str(tmp_path / "tools"),
        "UV_TOOL_BIN_DIR": str(tmp_path / "bin"),
        "RLM_SKILLS_DIR": str(tmp_path / "no-skills"),
        "RLM_KERNEL_PACKAGES": str(build_wheel(tmp_path, kept, "kept")),
    }
    done = subprocess.run([str(INSTALL)], capture_output=True, text=True, env=env, timeout=540)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "with packages for the kernel" in done.stdout
    wheel = build_wheel(tmp_path, added, "added")
    cell = f"%pip install -q --no-index --no-deps {wheel}\nimport {kept}, {added}\nprint({kept}.VALUE, {added}.VALUE)"
    model.script(reply(None, ipython(cell)), reply("both there"))
    env["PATH"] = "/usr/bin:/bin"
    run = subprocess.run(
        [str(tmp_path / "bin" / "rlm"), "-q", "import them"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0 and run.stdout.strip() == "both there", run.stderr
    assert "kept added" in model.requests[-1]["messages"][-1]["content"]
