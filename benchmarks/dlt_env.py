"""The dlt peer's own environment: ``benchmarks/.venv-dlt``, made once from
``benchmarks/requirements-dlt.txt``. dlt never enters the project's environment or dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-dlt"
REQUIREMENTS = HERE / "requirements-dlt.txt"


def python(venv: Path = VENV) -> Path:
    """The dlt environment's interpreter, made (venv + pip install) if it does not exist yet."""
    exe = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = REQUIREMENTS.read_text()
    if exe.exists() and stamp.exists() and stamp.read_text() == wanted:
        return exe
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(exe), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return exe
