"""Label jobs killed (SIGKILL) in each pass resume to byte-identical output.

``test_resume_kill.py`` kills a label job in its last pass; here it is
killed in the first two, whose results (counts, boundary planes, block
labels in the journal's scratch, face pairs) the resumed job must reuse.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import zarr
    from emseg.blockwise import _labels, label

    src, out, resume, stage = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
    task = {"components": _labels._ComponentsTask, "faces": _labels._FacesTask}[stage]
    original = task.__call__

    def slow_call(self, block_id):  # test instrumentation: slow enough to be killed midway
        time.sleep(0.03)
        return original(self, block_id)

    task.__call__ = slow_call
    label(zarr.open_array(src, mode="r"), out=out, connectivity=26, block_shape=(4, 8, 8),
          chunks=(4, 8, 8), n_workers=2, resume=resume, progress=False)
    """
)


def _chunk_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted((root / "0" / "c").rglob("*"))
        if p.is_file()
    }


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("stage", ["components", "faces"])
def test_label_killed_in_early_pass_resumes_identically(tmp_path, stage):
    rng = np.random.default_rng(4)
    src = tmp_path / "in.zarr"
    arr = zarr.create_array(store=str(src), shape=(16, 32, 32), dtype="u1", chunks=(4, 8, 8))
    arr[:] = (rng.random((16, 32, 32)) > 0.7).astype(np.uint8)
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    full, killed = tmp_path / "full.zarr", tmp_path / "killed.zarr"
    r = _run(script, str(src), str(full), "0", stage)
    assert r.returncode == 0, r.stderr

    n_blocks = 64
    done_dir = killed / ".emseg-journal" / stage
    proc = subprocess.Popen(
        [sys.executable, str(script), str(src), str(killed), "0", stage],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if done_dir.exists() and len(os.listdir(done_dir)) >= 10:
                break
            if proc.poll() is not None:
                pytest.fail(f"the job ended before it could be killed: {proc.stderr.read()!r}")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = len([n for n in os.listdir(done_dir) if n.isdigit()])
    assert 10 <= done < n_blocks  # killed midway through the pass
    assert not (killed / ".emseg-journal" / "relabel").exists()

    r = _run(script, str(src), str(killed), "1", stage)
    assert r.returncode == 0, r.stderr
    assert zarr.open_array(str(killed / "0")).attrs["emseg"]["complete"] is True
    files = _chunk_files(full)
    assert files
    assert _chunk_files(killed) == files
