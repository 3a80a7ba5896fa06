"""The fixed mmap threshold: large temporaries freed on worker threads go back to the OS."""

from __future__ import annotations

import subprocess
import sys

import pytest

from realtime.allocator import MMAP_THRESHOLD_VARIABLE, fix_mmap_threshold
from realtime.config import ConfigError

#: Frees one 12.8 MB block on the main thread (what raises glibc's dynamic threshold), then on
#: eight threads in turn makes and frees ten 12.8 MB blocks each (Risk's Monte Carlo size), and
#: prints how much anonymous memory the process holds afterwards beyond its start, in MB.
WORKLOAD = """
import os, sys, threading
from realtime.allocator import fix_mmap_threshold
print(fix_mmap_threshold(os.environ), flush=True)

def anonymous_mb():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["RssAnon"].split()[0]) / 1024

def churn():
    for _ in range(10):
        block = bytearray(12_800_000)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        del block

start = anonymous_mb()
churn()
for _ in range(8):
    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
print(round(anonymous_mb() - start, 1))
"""


def held_after_churn(threshold: str) -> tuple[str, float]:
    env = {MMAP_THRESHOLD_VARIABLE: threshold, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", WORKLOAD], env=env, capture_output=True, text=True, check=True,
        timeout=60,
    )  # fmt: skip
    applied, held = done.stdout.split()
    return applied, float(held)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_large_temporaries_freed_on_threads_return_to_the_os_with_the_fixed_threshold() -> None:
    applied, held = held_after_churn(str(1 << 20))
    assert applied == str(1 << 20)
    assert held < 5  # every 12.8 MB block was its own mapping, unmapped on free
    # the control: glibc's dynamic threshold keeps a block per arena after the first free
    applied, held = held_after_churn("0")
    assert applied == "None"
    assert held > 12


def test_a_bad_threshold_names_the_variable() -> None:
    for bad in ("lots", "-1", str(64 << 20)):
        with pytest.raises(ConfigError, match=MMAP_THRESHOLD_VARIABLE):
            fix_mmap_threshold({MMAP_THRESHOLD_VARIABLE: bad})
