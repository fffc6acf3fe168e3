"""Label jobs killed (SIGKILL) in each pass resume to byte-identical output.

``test_resume_kill.py`` kills a label job in its last pass; here it is
killed in the first two, whose results (counts, boundary planes, block
labels in the journal's scratch, face pairs) the resumed job must reuse.
"""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
import zarr

from .conftest import chunk_files, kill_when, run_script

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


@pytest.mark.parametrize("stage", ["components", "faces"])
def test_label_killed_in_early_pass_resumes_identically(tmp_path, stage):
    rng = np.random.default_rng(4)
    src = tmp_path / "in.zarr"
    arr = zarr.create_array(store=str(src), shape=(16, 32, 32), dtype="u1", chunks=(4, 8, 8))
    arr[:] = (rng.random((16, 32, 32)) > 0.7).astype(np.uint8)
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    full, killed = tmp_path / "full.zarr", tmp_path / "killed.zarr"
    r = run_script(script, str(src), str(full), "0", stage)
    assert r.returncode == 0, r.stderr

    n_blocks = 64
    done_dir = killed / ".emseg-journal" / stage
    kill_when(script, [str(src), str(killed), "0", stage], done_dir, 10)
    done = len([n for n in os.listdir(done_dir) if n.isdigit()])
    assert 10 <= done < n_blocks  # killed midway through the pass
    assert not (killed / ".emseg-journal" / "relabel").exists()

    r = run_script(script, str(src), str(killed), "1", stage)
    assert r.returncode == 0, r.stderr
    assert zarr.open_array(str(killed / "0")).attrs["emseg"]["complete"] is True
    files = chunk_files(full)
    assert files
    assert chunk_files(killed) == files
