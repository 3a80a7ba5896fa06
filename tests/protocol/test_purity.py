"""protocol/ is sans-I/O: importing it must not pull in asyncio, websockets or falcon."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import protocol

FORBIDDEN = ("asyncio", "websockets", "falcon", "uvloop", "redis", "asyncpg", "socket")


def test_protocol_imports_no_io_modules() -> None:
    modules = sorted(p.stem for p in Path(protocol.__file__).parent.glob("*.py"))
    code = (
        "import sys\n"
        f"for m in {modules!r}: __import__('protocol.' + m if m != '__init__' else 'protocol')\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"protocol/ imported {out.stdout.strip()}"


def test_protocol_sources_do_not_mention_io_imports() -> None:
    for path in Path(protocol.__file__).parent.glob("*.py"):
        text = path.read_text()
        for name in ("asyncio", "websockets", "falcon"):
            assert f"import {name}" not in text, f"{path.name} imports {name}"
