"""kaon.procs: the cores a process may use, and children that end with their parent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from kaon.procs import usable_cores
from kaon.serve.factory import default_threads
from kaon.tune.study import default_workers
print(usable_cores(), default_workers(), default_threads(1))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
def test_a_process_pinned_to_one_core_counts_one_core() -> None:
    """Under `taskset -c 0` (or a container's --cpuset-cpus) a search ran one trial per host
    core and a replica one torch thread per host core, all on the one core it had."""
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.stdout.split() == ["1", "1", "1"]


ORPHAN = """
import os, sys, time
from kaon.procs import exit_when_orphaned
if os.fork():  # the parent: report the child's pid, then go
    time.sleep(0.3)
    os._exit(0)
exit_when_orphaned(75)
print(os.getpid(), flush=True)
time.sleep(30)
"""


def test_a_child_whose_parent_dies_exits_on_its_own() -> None:
    out = subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True,
                         timeout=30)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or b"zombie" in status.read_bytes().lower()
