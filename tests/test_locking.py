"""The portable file lock, between real processes."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from remote.core.locking import FileLock, LockHeld

HOLD = """
import sys, time
from remote.core.locking import FileLock
lock = FileLock(sys.argv[1], holder="agent pid-test on host-x").acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_in_child(path, seconds):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_process_is_refused_with_the_holders_name(tmp_path):
    lock_path = tmp_path / "agent.lock"
    child = hold_in_child(lock_path, 30)
    try:
        with pytest.raises(LockHeld, match="agent pid-test on host-x"):
            FileLock(lock_path).acquire(timeout=0)
        started = time.monotonic()
        with pytest.raises(LockHeld):
            FileLock(lock_path).acquire(timeout=0.3)
        assert time.monotonic() - started >= 0.3
    finally:
        child.kill()
        child.wait()
    # The dead holder's lock went with its process.
    with FileLock(lock_path, holder="me") as lock:
        assert lock.current_holder() == "me"


def test_a_waiter_gets_the_lock_when_the_holder_exits(tmp_path):
    lock_path = tmp_path / "job.lock"
    child = hold_in_child(lock_path, 0.5)
    lock = FileLock(lock_path).acquire(timeout=20)
    try:
        assert child.wait(timeout=20) == 0
    finally:
        lock.release()
