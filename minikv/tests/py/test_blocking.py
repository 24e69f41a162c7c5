"""Blocking commands side by side: runs `blocking_side_by_side.py` (FIFO service,
timeouts, counted pops, disconnects, MULTI) against the real redis-server and minikv.
The script is also usable on its own: `blocking_side_by_side.py REDIS_PORT MINIKV_PORT`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("blocking_side_by_side.py")


def test_blocking_commands_behave_like_redis(real_redis, minikv):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(real_redis.port), str(minikv.port)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
