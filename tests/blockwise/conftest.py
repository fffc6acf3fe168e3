"""Helpers shared by the blockwise tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images are equal up to a renumbering (background 0 kept as 0)."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


@pytest.fixture(scope="session")
def assert_same_labels():
    """Assert that labels equal a reference up to relabelling, with equal object counts."""

    def check(ours: np.ndarray, ref: np.ndarray) -> None:
        ours = np.asarray(ours)
        ref = np.asarray(ref)
        assert ours.shape == ref.shape
        assert same_partition(ours, ref), "labels differ from the reference beyond a renumbering"
        n = int(np.unique(ref[ref > 0]).size)
        assert np.unique(ours[ours > 0]).size == n
        # consecutive ids 1..N
        if n:
            assert int(ours.max()) == n

    return check


def chunk_files(root: Path) -> dict[str, bytes]:
    """Every chunk file of the level-0 array under `root` (not the journal, not metadata)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted((root / "0" / "c").rglob("*"))
        if p.is_file()
    }


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `script` with this Python to the end; output captured as text."""
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )


def kill_when(script: Path, args: list[str], done_dir: Path, at_least: int) -> None:
    """Start `script`; SIGKILL it once `done_dir` (a job's journal) records `at_least` blocks."""
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            # finished blocks only: a journal also holds temporary files while it writes
            if done_dir.exists() and sum(n.isdigit() for n in os.listdir(done_dir)) >= at_least:
                break
            if proc.poll() is not None:
                pytest.fail(f"the job ended before it could be killed: {proc.stderr.read()!r}")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
