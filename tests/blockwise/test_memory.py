"""Peak memory of a job is bounded by blocks x workers, not by the volume's size."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status"),
]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import psutil
    import zarr
    from emseg.blockwise import Blocking, label, map_blocks

    def invert(data):
        return 255 - data

    src_path, out_path, job = sys.argv[1], sys.argv[2], sys.argv[3]
    # labels: a smaller input, but its uint64 output (1.3 GB) is still far beyond the bound
    shape = (400, 1024, 1024) if job == "map" else (160, 1024, 1024)
    chunks = (64, 128, 128)
    src = zarr.create_array(store=src_path, shape=shape, dtype="u1", chunks=chunks)
    for blk in Blocking(shape, chunks):  # fill chunk by chunk: never the whole volume
        z0 = blk.write_roi.begin[0]
        value = (blk.block_id * 37) % 200
        data = np.full(blk.write_roi.shape, value, np.uint8)
        data[:: 7] = 0  # planes of background: separate objects in every block
        src[blk.write_roi.to_slices()] = data
    baseline = psutil.Process().memory_info().rss
    if job == "map":
        map_blocks(invert, src, out=out_path, block_shape=(64, 256, 256), chunks=chunks,
                   n_workers=2, progress=False)
    else:
        label(src, out=out_path, connectivity=6, block_shape=(64, 128, 128), chunks=chunks,
              n_workers=2, progress=False)
    # VmHWM: the peak RSS of this process image (ru_maxrss would keep the parent's
    # peak across fork + exec)
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    print(json.dumps({"baseline": baseline, "peak": peak, "nbytes": int(np.prod(shape))}))
    """
)


@pytest.mark.parametrize("job", ["map", "label"])
def test_peak_memory_bounded_by_blocks(tmp_path, job):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr"), job],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout.strip().splitlines()[-1])
    growth = m["peak"] - m["baseline"]
    # map: blocks of 4 MiB (uint8); label: blocks of 1 Mi voxels (8 MiB as uint64 labels).
    # Two workers, plus a constant overhead (imports, zarr's buffers, malloc arenas).
    bound = 160 * 2**20 if job == "label" else 120 * 2**20
    volume_bytes = m["nbytes"] * (8 if job == "label" else 1)  # the larger of input and output
    assert volume_bytes > 3 * bound
    assert growth < bound, (
        f"peak grew by {growth / 2**20:.0f} MiB on a {m['nbytes'] / 2**20:.0f} MiB volume"
    )
