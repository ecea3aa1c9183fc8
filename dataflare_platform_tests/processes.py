"""Crash tests' process driver: a command SIGKILLed at random moments and restarted,
until it finishes (exactly-once tests of every transactional sink use it)."""

import json
import os
import random
import signal
import subprocess
import time


def kill_until_done(
    command: list[str],
    seed: int = 7,
    max_kills: int = 4,
    delay_s: tuple[float, float] = (1.5, 3.5),
) -> tuple[dict, int]:
    """Run ``command``, SIGKILL it at a random moment within ``delay_s`` up to
    ``max_kills`` times, restart it each time, and return the final run's JSON summary
    (its last stdout line) and the number of kills."""
    rng = random.Random(seed)
    kills = 0
    while True:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + rng.uniform(*delay_s)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None and kills < max_kills:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            kills += 1
            continue
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        return json.loads(out.decode().strip().splitlines()[-1]), kills
