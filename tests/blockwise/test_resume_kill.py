"""A job killed with SIGKILL midway and resumed gives byte-identical output."""

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
    import numpy as np
    import zarr
    from scipy import ndimage
    from emseg.blockwise import label, map_blocks

    def slow_smooth(data, *, pause):
        time.sleep(pause)  # slowed down so that the test can kill it midway
        return ndimage.gaussian_filter(data.astype(np.float32), 1.0)

    job, src, out, resume = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    image = zarr.open_array(src, mode="r")
    if job == "map":
        map_blocks(slow_smooth, image, out=out, halo=4, dtype=np.float32, block_shape=8,
                   chunks=8, kwargs={"pause": 0.05}, resume=resume, progress=False)
    else:
        # slow the last pass down (test instrumentation) so that it is killed midway
        from emseg.blockwise import _labels

        original = _labels._RelabelTask.__call__

        def slow_call(self, block_id):
            time.sleep(0.03)
            return original(self, block_id)

        _labels._RelabelTask.__call__ = slow_call
        label(image[:16, :16, :16], out=out, connectivity=26, block_shape=4, chunks=4, n_workers=1,
              resume=resume, progress=False)
    """
)


@pytest.mark.parametrize(
    ("job", "stage", "at_least", "n_blocks"),
    [("map", "map", 12, 64), ("label", "relabel", 12, 64)],
)
def test_kill_and_resume_is_byte_identical(tmp_path, job, stage, at_least, n_blocks):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    rng = np.random.default_rng(0)
    src = zarr.create_array(
        store=str(tmp_path / "in.zarr"), shape=(16, 32, 32), dtype="u1", chunks=(8, 8, 8)
    )
    data = (rng.random((16, 32, 32)) * 255).astype(np.uint8)
    src[:] = data if job == "map" else (data > 170).astype(np.uint8)
    full = tmp_path / "full.zarr"
    killed = tmp_path / "killed.zarr"
    r = run_script(script, job, str(tmp_path / "in.zarr"), str(full), "0")
    assert r.returncode == 0, r.stderr

    kill_when(
        script,
        [job, str(tmp_path / "in.zarr"), str(killed), "0"],
        killed / ".emseg-journal" / stage,
        at_least,
    )
    done = len(os.listdir(killed / ".emseg-journal" / stage))
    assert at_least <= done < n_blocks  # killed midway
    assert zarr.open_array(str(killed / "0")).attrs["emseg"]["complete"] is False
    # without --resume the partial output is not touched
    r = run_script(script, job, str(tmp_path / "in.zarr"), str(killed), "0")
    assert r.returncode != 0
    assert "OutputExistsError" in r.stderr
    r = run_script(script, job, str(tmp_path / "in.zarr"), str(killed), "1")
    assert r.returncode == 0, r.stderr
    assert zarr.open_array(str(killed / "0")).attrs["emseg"]["complete"] is True
    assert chunk_files(killed) == chunk_files(full)
    assert len(chunk_files(full)) > 0
