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

    src_path, out_path, job, depth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    shape = (depth, 1024, 1024)
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


def _peak_growth(tmp_path, job, depth):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    run = tmp_path / f"{job}-{depth}"
    run.mkdir()
    r = subprocess.run(
        [sys.executable, str(script), str(run / "in.zarr"), str(run / "out.zarr"), job, str(depth)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout.strip().splitlines()[-1])
    return m["peak"] - m["baseline"], m["nbytes"]


# (small depth, large depth) of a 1024 x 1024 uint8 volume; labels write 8 bytes per voxel.
DEPTHS = {"map": (128, 384), "label": (48, 144)}


@pytest.mark.parametrize("job", ["map", "label"])
def test_peak_memory_bounded_by_blocks(tmp_path, job):
    """The same job on a volume 3x larger needs no more memory (blocks x workers bound it).

    A job that held its input or output whole would grow by the difference
    of the volumes (256 MiB of input for map, 768 MiB of uint64 output for
    label); a block-bounded one stays within allocator noise.
    """
    small, large = DEPTHS[job]
    out_bytes = 8 if job == "label" else 1
    growth_small, n_small = _peak_growth(tmp_path, job, small)
    growth_large, n_large = _peak_growth(tmp_path, job, large)
    added = (n_large - n_small) * out_bytes  # what holding the output whole would add
    mib = 2**20
    assert growth_large - growth_small < 0.2 * added, (
        f"peak growth rose from {growth_small / mib:.0f} to {growth_large / mib:.0f} MiB "
        f"when the volume grew by {added / mib:.0f} MiB"
    )
    # and in absolute terms: far below the data the large job reads and writes
    assert growth_large < 0.5 * n_large * out_bytes, (
        f"peak grew by {growth_large / mib:.0f} MiB on a {n_large / mib:.0f} MiB volume"
    )
