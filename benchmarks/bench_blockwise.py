"""Blockwise engine: Gaussian filter and connected components on a 512^3 uint8 zarr volume.

Side by side in one run:

- Gaussian sigma = 2 voxels (halo 8), zarr -> zarr, float32 math and float32
  output, 64^3 chunks: emseg on 1 thread, on 2 threads (the filter's default
  blocks, 128 x 256 x 256, and 128^3 blocks), on a distributed LocalCluster
  with 2 processes x 1 thread, against ``scipy.ndimage.gaussian_filter`` in
  memory on 1 thread (filter only, no I/O); these run in ``--repeats``
  interleaved rounds and efficiency / distributed ratio are taken within each
  round (medians reported, every round listed). The LocalCluster is started
  once before the rounds and its start-up (processes, imports, the compiled
  Gaussian kernels loaded on each worker) is reported in its own row; one more
  row runs ``scheduler="local"`` end to end, start-up included. Then
  ``dask.array.map_overlap`` (from_zarr -> to_zarr, 2 threads) once.
- Out-of-core connected components (26-connectivity, uint64 output, label's
  default blocks unless ``--label-block Z Y X``) against three references,
  each in a fresh child process: ``cc3d.connected_components`` in memory on
  the uint8 mask, its first call (CPU split into user and system, with its
  page faults) and a repeated call; and what a user without emseg runs
  end to end (read the whole zarr into numpy, cc3d to uint64, write a zarr
  with the emseg output's chunks and codec), with its peak RSS growth. In
  ``--repeats`` interleaved rounds: emseg's wall and CPU time ratios to each
  reference, and the peak RSS growth of the blockwise job above its imports
  (child process) as a fraction of the volume. Then once on a LocalCluster
  of 2 processes (``--no-distributed`` skips it).

The CPU is shared with other work, so the numbers are indicative. Run
``python benchmarks/bench_blockwise.py [--size N] [--repeats R] [--only gaussian|label]``;
writes ``bench_output/blockwise.json`` (``blockwise-label.json`` with ``--only label``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SIGMA = 2.0
BLOCK = (128, 128, 128)
CHUNKS = (64, 64, 64)


def _warm_worker() -> None:
    """Import the engine and load its compiled Gaussian kernels on a worker."""
    from emseg.blockwise._gaussian import gaussian_crop

    gaussian_crop(np.zeros((4, 4, 4), np.uint8), sigma=(1.0, 1.0, 1.0), truncate=4.0)


def _make_input(path: Path, n: int) -> None:
    """A smooth random uint8 volume (blobs), written slab by slab."""
    import zarr
    from scipy import ndimage

    arr = zarr.create_array(store=str(path), shape=(n, n, n), dtype="u1", chunks=CHUNKS)
    rng = np.random.default_rng(0)
    for z in range(0, n, CHUNKS[0]):
        slab = rng.random((CHUNKS[0], n, n), dtype=np.float32)
        slab = ndimage.gaussian_filter(slab, 3.0)
        lo, hi = slab.min(), slab.max()
        arr[z : z + CHUNKS[0]] = ((slab - lo) / (hi - lo) * 255).astype(np.uint8)


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _peak_rss() -> int:
    """Peak RSS of this process image in bytes (VmHWM; see benchmarks/_common.py)."""
    from _common import peak_rss_bytes

    return peak_rss_bytes()


def _usage() -> dict[str, float]:
    """This process's CPU times (user, system) and page faults (minor, major) so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "user": ru.ru_utime,
        "sys": ru.ru_stime,
        "minflt": float(ru.ru_minflt),
        "majflt": float(ru.ru_majflt),
    }


def _cc3d_child(src: str) -> None:
    """Run in a child process: cc3d on the uint8 mask in memory, a first and a repeated call.

    The mask is loaded before the timer. Both calls allocate and page-fault
    their output (512 MiB of uint32 for 512^3; freed memory that large goes
    back to the kernel), but the first one, as a user's one call, gets some
    or all of it on physical pages this VM has not used lately, which cost
    up to ~15x more system time per fault than the pages the first call
    just freed, which the second gets back (docs/blockwise.md, "cc3d's
    first call").
    Each call's user and system CPU seconds and minor / major page faults
    (``getrusage``) are reported: they show where the first call's extra
    time goes.
    """
    import cc3d
    import zarr

    # uint8, not bool: cc3d 4.1's bool (binary) path is wrong in some cases
    fg = (zarr.open_array(src, mode="r")[:] > 127).view(np.uint8)
    result: dict[str, float | str] = {}
    for name in ("first", "second"):
        before = _usage()
        start, cpu = time.perf_counter(), time.process_time()
        labels = cc3d.connected_components(fg, connectivity=26)
        result[name] = time.perf_counter() - start
        result[name + "_cpu"] = time.process_time() - cpu
        after = _usage()
        for key in ("user", "sys", "minflt", "majflt"):
            result[f"{name}_{key}"] = after[key] - before[key]
        result["n"] = int(labels.max())
        result["out_dtype"] = str(labels.dtype)
        result["out_mib"] = labels.nbytes / 2**20
        del labels
    print(json.dumps(result))


def _numpy_child(src: str, out: str, codec: str) -> None:
    """Run in a child process: what a user without emseg runs for the label job.

    Timed end to end: read the whole input zarr into numpy, threshold it to a
    uint8 mask, ``cc3d.connected_components`` (26-connectivity) straight to
    uint64, and write the labels into a new zarr array with the emseg
    output's chunks and codec (`codec`: the JSON of its compressor, a zarr v3
    ``BloscCodec`` configuration) through zarr's own ``__setitem__``.
    Everything the job imports is loaded before the baseline RSS, as in
    :func:`_label_child`; the growth above it (VmHWM) is the job's data.
    """
    import cc3d
    import psutil
    import zarr
    from zarr.codecs import BloscCodec

    compressor = BloscCodec(**json.loads(codec))
    baseline = psutil.Process().memory_info().rss
    cpu = time.process_time()
    start = time.perf_counter()
    image = zarr.open_array(src, mode="r")
    fg = (image[:] > 127).view(np.uint8)
    labels, n = cc3d.connected_components(fg, connectivity=26, out_dtype=np.uint64, return_N=True)
    del fg
    arr = zarr.create_array(
        store=out,
        shape=labels.shape,
        dtype=np.uint64,
        chunks=CHUNKS,
        fill_value=0,
        compressors=compressor,
    )
    arr[:] = labels
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "n": int(n),
                "peak_rss": _peak_rss(),
                "baseline_rss": baseline,
            }
        )
    )


def _label_child(src: str, out: str, block: str = "default") -> None:
    """Run in a child process: label blockwise and report time, CPU time and peak RSS.

    Everything the job imports (emseg.io for the OME-Zarr output, with numba;
    cc3d; scipy's csgraph; numcodecs) is loaded before the baseline RSS: the
    growth above it is what the job's data cost. `block` is ``"default"``
    (label's own default block shape) or ``"Z,Y,X"``.
    """
    import cc3d  # noqa: F401
    import numcodecs  # noqa: F401
    import psutil
    import scipy.sparse.csgraph  # noqa: F401
    import zarr

    import emseg.io  # noqa: F401
    from emseg.blockwise import label
    from emseg.blockwise._geometry import default_block_shape

    image = zarr.open_array(src, mode="r")
    if block == "default":
        block_shape = default_block_shape(image.shape, CHUNKS)
    else:
        block_shape = tuple(int(b) for b in block.split(","))
    baseline = psutil.Process().memory_info().rss
    cpu = time.process_time()
    t, _ = _timed(
        lambda: label(
            image,
            out=out,
            threshold=127,
            connectivity=26,
            block_shape=None if block == "default" else block_shape,
            chunks=CHUNKS,
            n_workers=2,
            progress=False,
        )
    )
    cpu = time.process_time() - cpu
    peak = _peak_rss()
    print(
        json.dumps(
            {
                "seconds": t,
                "cpu": cpu,
                "peak_rss": peak,
                "baseline_rss": baseline,
                "block_shape": list(block_shape),
            }
        )
    )


def _median(values: list[float]) -> float:
    return float(np.median(values))


def gaussian_rows(image, src: Path, tmpd: Path, *, repeats: int = 3) -> dict[str, dict]:
    """The Gaussian rows: `repeats` interleaved rounds, medians and per-round ratios.

    Each round runs, one after the other: scipy in memory (1 thread), emseg
    serial, emseg on 2 threads (default blocks, then 128**3 blocks) and emseg
    on a LocalCluster of 2 processes x 1 thread. Efficiency and the
    distributed ratio are computed within each round (the machine's load
    drifts between rounds) and reported as the median over rounds with every
    round's value. The LocalCluster is started once, before the rounds, and
    its start-up (processes, imports, the Gaussian kernels loaded on each
    worker) is timed in its own row; a last row times ``scheduler="local"``
    end to end (cluster start-up included), as a one-off command runs.
    """
    import dask
    import dask.array as da
    from distributed import Client
    from scipy import ndimage

    from emseg.blockwise import gaussian_filter, local_cluster

    rows: dict[str, dict] = {}
    data = image[:]
    _warm_worker()  # this process's kernels, as the workers' below

    def emseg_gauss(name: str, block_shape=None, **kw) -> float:
        t, out = _timed(
            lambda: gaussian_filter(
                image,
                sigma=SIGMA,
                unit="voxel",
                out=tmpd / f"{name}.zarr",
                overwrite=True,
                block_shape=block_shape,
                chunks=CHUNKS,
                progress=False,
                **kw,
            )
        )
        assert np.array_equal(out[:64], ref[:64]), f"{name}: result differs from scipy"
        return t

    # the cluster emseg starts for scheduler="local" (workers without MALLOC_TRIM_THRESHOLD_)
    t_start, cluster = _timed(lambda: local_cluster(2))
    client = Client(cluster, set_as_default=False)
    t_warm, _ = _timed(lambda: client.run(_warm_worker))
    rounds: dict[str, list[float]] = {
        k: [] for k in ("scipy", "serial", "threads", "threads128", "distributed")
    }
    loads = []
    try:
        for _ in range(repeats):
            loads.append(os.getloadavg()[0])
            t, ref = _timed(
                lambda: ndimage.gaussian_filter(data.astype(np.float32), SIGMA, output=np.float32)
            )
            rounds["scipy"].append(t)
            rounds["serial"].append(emseg_gauss("serial", scheduler="serial"))
            rounds["threads"].append(emseg_gauss("threads", n_workers=2))
            rounds["threads128"].append(emseg_gauss("threads128", BLOCK, n_workers=2))
            rounds["distributed"].append(emseg_gauss("distributed", scheduler=client))
        loads.append(os.getloadavg()[0])
    finally:
        client.close()
        cluster.close()
    r = {k: np.asarray(v) for k, v in rounds.items()}
    eff = r["scipy"] / (2 * r["threads"])
    eff128 = r["scipy"] / (2 * r["threads128"])
    ratio = r["distributed"] / r["threads"]

    def each(values: np.ndarray) -> str:
        return " / ".join(f"{v:.2f}" for v in values)

    load = f"{min(loads):.1f}-{max(loads):.1f}"
    rows["gaussian scipy in memory, 1 thread (no I/O)"] = {
        "seconds": _median(rounds["scipy"]),
        "rounds": each(r["scipy"]),
    }
    rows["gaussian emseg zarr->zarr, 1 thread"] = {
        "seconds": _median(rounds["serial"]),
        "rounds": each(r["serial"]),
    }
    rows["gaussian emseg zarr->zarr, 2 threads (default blocks 128x256x256)"] = {
        "seconds": _median(rounds["threads"]),
        "rounds": each(r["threads"]),
        "parallel_efficiency_vs_scipy": _median(list(eff)),
        "efficiency_rounds": each(eff),
        "parallel_efficiency_vs_emseg_1": _median(list(r["serial"] / (2 * r["threads"]))),
    }
    rows[f"gaussian emseg zarr->zarr, 2 threads, blocks {BLOCK}"] = {
        "seconds": _median(rounds["threads128"]),
        "parallel_efficiency_vs_scipy": _median(list(eff128)),
        "efficiency_rounds": each(eff128),
    }
    rows["gaussian emseg zarr->zarr, LocalCluster 2 processes (started before)"] = {
        "seconds": _median(rounds["distributed"]),
        "rounds": each(r["distributed"]),
        "ratio_to_2_threads": _median(list(ratio)),
        "ratio_rounds": each(ratio),
    }
    rows["LocalCluster start-up (2 processes) + worker warm-up (imports, kernels)"] = {
        "seconds": t_start + t_warm,
        "start": t_start,
        "warm": t_warm,
    }
    t_local = emseg_gauss("local", scheduler="local", n_workers=2)
    rows["gaussian emseg, scheduler='local' end to end (cluster start-up included)"] = {
        "seconds": t_local,
        "ratio_to_2_threads": t_local / _median(rounds["threads"]),
    }

    def dask_overlap() -> None:
        x = da.from_zarr(str(src)).rechunk(BLOCK)
        y = x.map_overlap(
            lambda b: ndimage.gaussian_filter(b.astype(np.float32), SIGMA),
            depth=8,
            boundary="reflect",
            dtype=np.float32,
        )
        y.rechunk(CHUNKS).to_zarr(str(tmpd / "dask.zarr"), overwrite=True)

    with dask.config.set(scheduler="threads", num_workers=2):
        t_dask, _ = _timed(dask_overlap)
    rows["gaussian dask.array.map_overlap zarr->zarr, 2 threads"] = {"seconds": t_dask}
    rows["load average (1 min) during the Gaussian rounds"] = {
        "seconds": float("nan"),
        "load": load,
    }
    return rows


def _child(*args: str) -> dict:
    """Run this script with `args` in a fresh Python process; its last stdout line as JSON."""
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: The references of the label job: (key in the rounds, row name).
LABEL_REFERENCES = {
    "cc3d": "cc3d in memory, first call",
    "cc3d_warm": "cc3d in memory, repeated call",
    "numpy": "numpy + cc3d + zarr, end to end",
}


def label_rows(
    image, src: Path, tmpd: Path, *, repeats: int = 3, block: str = "default", distributed: bool
) -> tuple[dict[str, dict], dict[str, dict[str, float]]]:
    """The label rows and emseg's ratios: `repeats` interleaved rounds of the references and
    emseg blockwise.

    Each round runs three fresh child processes, one after the other:

    - ``cc3d.connected_components`` on the uint8 mask in memory (no I/O),
      the first call and a repeated call (both fault in their output; the
      first on pages this VM has not used lately), each with its CPU time
      split into user and system and its page faults;
    - what a user without emseg runs (:func:`_numpy_child`): read the whole
      zarr, cc3d to uint64, write a zarr with the emseg output's chunks and
      codec, timed end to end, with its peak RSS growth;
    - the blockwise job (2 threads): wall, CPU = user + system of all its
      threads, and peak RSS growth above its imports.

    emseg's wall and CPU ratios to each of the three references are taken
    within each round (the load drifts) and reported as medians with every
    round's value; the load average (1 min) is recorded at the start and end
    of the rounds.
    """
    import zarr

    from emseg.blockwise._output import output_codec

    n = int(image.shape[0])
    nbytes = math.prod(image.shape)  # uint8: one byte per voxel
    codec = output_codec(np.uint64)
    codec_json = json.dumps(codec.to_dict()["configuration"])
    rounds: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rounds.setdefault(key, []).append(float(value))

    loads = []
    n_ref = n_ours = n_np = 0
    cc3d_dtype = ""
    block_shape: list[int] = []
    for r in range(repeats):
        loads.append(os.getloadavg()[0])
        c = _child("--cc3d-child", str(src))
        add("cc3d", c["first"])
        add("cc3d_cpu", c["first_cpu"])
        add("cc3d_warm", c["second"])
        add("cc3d_warm_cpu", c["second_cpu"])
        for call in ("first", "second"):
            for key in ("user", "sys", "minflt", "majflt"):
                add(f"cc3d_{call}_{key}", c[f"{call}_{key}"])
        n_ref, cc3d_dtype = int(c["n"]), f"{c['out_dtype']}, {c['out_mib']:.0f} MiB"
        ref_out = tmpd / f"numpy-{r}.zarr"
        u = _child("--numpy-child", str(src), str(ref_out), codec_json)
        add("numpy", u["seconds"])
        add("numpy_cpu", u["cpu"])
        add("numpy_growth", u["peak_rss"] - u["baseline_rss"])
        n_np = int(u["n"])
        out = tmpd / f"labels-{r}.zarr"
        m = _child("--label-child", str(src), str(out), block)
        add("emseg", m["seconds"])
        add("emseg_cpu", m["cpu"])
        add("growth", m["peak_rss"] - m["baseline_rss"])
        block_shape = m["block_shape"]
        ours = zarr.open_array(str(out / "0"), mode="r")
        theirs = zarr.open_array(str(ref_out), mode="r")
        mark: Any = ours.attrs["emseg"]
        n_ours = int(mark["n_labels"])
        assert n_ours == n_ref == n_np, "label counts differ between emseg and cc3d"
        # the reference writes what emseg writes: same dtype, chunks and codecs
        assert (theirs.dtype, theirs.chunks) == (ours.dtype, ours.chunks), "not the same layout"
        assert ours.metadata.to_dict()["codecs"] == theirs.metadata.to_dict()["codecs"], "codec"
        if r == 0:  # and the same labels up to their numbering, on the first slab
            a = np.asarray(ours[: CHUNKS[0]]).ravel()
            b = np.asarray(theirs[: CHUNKS[0]]).ravel()
            assert np.array_equal(a == 0, b == 0), "foreground differs from cc3d's"
            pairs = np.unique(a * np.uint64(int(b.max()) + 1) + b)
            assert len(pairs) == len(np.unique(a)) == len(np.unique(b)), "labels differ"
        shutil.rmtree(ref_out)
        shutil.rmtree(out)
    loads.append(os.getloadavg()[0])
    r_ = {k: np.asarray(v) for k, v in rounds.items()}
    fraction = r_["growth"] / nbytes
    np_fraction = r_["numpy_growth"] / nbytes

    def each(values: np.ndarray, fmt: str = "{:.2f}") -> str:
        return " / ".join(fmt.format(v) for v in values)

    def med(key: str) -> float:
        return _median(rounds[key])

    rows: dict[str, dict] = {}
    rows["label cc3d in memory on a uint8 mask (no I/O), first call in a fresh process"] = {
        "seconds": med("cc3d"),
        "rounds": each(r_["cc3d"]),
        "cpu_seconds": med("cc3d_cpu"),
        "user_seconds": med("cc3d_first_user"),
        "sys_seconds": med("cc3d_first_sys"),
        "minor_page_faults": med("cc3d_first_minflt"),
        "major_page_faults": med("cc3d_first_majflt"),
        "output": cc3d_dtype,
        "objects": n_ref,
    }
    rows["label cc3d in memory, repeated call (on the pages the first call freed)"] = {
        "seconds": med("cc3d_warm"),
        "rounds": each(r_["cc3d_warm"]),
        "cpu_seconds": med("cc3d_warm_cpu"),
        "user_seconds": med("cc3d_second_user"),
        "sys_seconds": med("cc3d_second_sys"),
        "minor_page_faults": med("cc3d_second_minflt"),
        "major_page_faults": med("cc3d_second_majflt"),
    }
    rows[
        "label numpy + cc3d + zarr end to end (read zarr, cc3d to uint64, write zarr with "
        "emseg's chunks and codec), fresh process"
    ] = {
        "seconds": med("numpy"),
        "rounds": each(r_["numpy"]),
        "cpu_seconds": med("numpy_cpu"),
        "objects": n_np,
        "rss_growth_mib": _median(list(r_["numpy_growth"] / 2**20)),
        "rss_growth_fraction_of_volume": _median(list(np_fraction)),
        "fraction_rounds": each(np_fraction, "{:.3f}"),
        "codec": codec_json,
    }
    emseg_row: dict = {
        "seconds": med("emseg"),
        "rounds": each(r_["emseg"]),
        "cpu_seconds": med("emseg_cpu"),
    }
    ratios: dict[str, dict[str, float]] = {}
    for key, name in LABEL_REFERENCES.items():
        wall = r_["emseg"] / r_[key]
        cpu = r_["emseg_cpu"] / r_[f"{key}_cpu"]
        emseg_row[f"ratio_to_{key}"] = _median(list(wall))
        emseg_row[f"ratio_to_{key}_rounds"] = each(wall)
        emseg_row[f"cpu_ratio_to_{key}"] = _median(list(cpu))
        emseg_row[f"cpu_ratio_to_{key}_rounds"] = each(cpu)
        ratios[name] = {"wall": _median(list(wall)), "cpu": _median(list(cpu))}
    emseg_row.update(
        {
            "objects": n_ours,
            "rss_growth_mib": _median(list(r_["growth"] / 2**20)),
            "rss_growth_fraction_of_volume": _median(list(fraction)),
            "fraction_rounds": each(fraction, "{:.3f}"),
            "volume": f"{n}^3 uint8 = {nbytes / 2**20:.0f} MiB",
        }
    )
    rows[f"label emseg blockwise zarr->zarr, 2 threads, blocks {tuple(block_shape)}"] = emseg_row
    rows["load average (1 min) during the label rounds"] = {
        "seconds": float("nan"),
        "load": f"{min(loads):.1f}-{max(loads):.1f}",
    }
    if distributed:
        from distributed import Client, LocalCluster

        from emseg.blockwise import label

        # cc3d holds the GIL: processes parallelise it where threads cannot
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            t_ld, _ = _timed(
                lambda: label(
                    image,
                    out=tmpd / "labels-dist.zarr",
                    threshold=127,
                    connectivity=26,
                    block_shape=None if block == "default" else block_shape,
                    chunks=CHUNKS,
                    scheduler=client,
                    progress=False,
                )
            )
        rows["label emseg blockwise zarr->zarr, LocalCluster 2 processes"] = {
            "seconds": t_ld,
            **{f"ratio_to_{k}": t_ld / med(k) for k in LABEL_REFERENCES},
        }
    return rows, ratios


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512, help="edge of the cubic volume")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds of the Gaussian and label cases"
    )
    parser.add_argument(
        "--only",
        choices=("all", "gaussian", "label"),
        default="all",
        help="run only the Gaussian or only the label cases",
    )
    parser.add_argument(
        "--label-block",
        nargs=3,
        type=int,
        metavar=("Z", "Y", "X"),
        help="block shape of the label job (default: label's own default)",
    )
    parser.add_argument(
        "--no-distributed", action="store_true", help="skip the label run on a LocalCluster"
    )
    parser.add_argument(
        "--label-child", nargs=3, metavar=("SRC", "OUT", "BLOCK"), help=argparse.SUPPRESS
    )
    parser.add_argument("--cc3d-child", metavar="SRC", help=argparse.SUPPRESS)
    parser.add_argument(
        "--numpy-child", nargs=3, metavar=("SRC", "OUT", "CODEC"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.label_child:
        _label_child(*args.label_child)
        return {}
    if args.cc3d_child:
        _cc3d_child(args.cc3d_child)
        return {}
    if args.numpy_child:
        _numpy_child(*args.numpy_child)
        return {}

    import zarr

    n = args.size
    rows: dict[str, dict] = {}
    ratios: dict[str, dict[str, float]] = {}
    block = "default" if args.label_block is None else ",".join(map(str, args.label_block))
    with tempfile.TemporaryDirectory(prefix="emseg-bench-") as tmp:
        tmpd = Path(tmp)
        src = tmpd / "in.zarr"
        _make_input(src, n)
        image = zarr.open_array(str(src), mode="r")
        if args.only in ("all", "gaussian"):
            rows.update(gaussian_rows(image, src, tmpd, repeats=args.repeats))
        if args.only in ("all", "label"):
            label, ratios = label_rows(
                image,
                src,
                tmpd,
                repeats=args.repeats,
                block=block,
                distributed=not args.no_distributed,
            )
            rows.update(label)

    result = {
        "volume": [n, n, n],
        "dtype": "uint8",
        "gaussian_block_shape": list(BLOCK),
        "chunks": list(CHUNKS),
        "sigma_voxels": SIGMA,
        "cpu_count": os.cpu_count(),
        "note": "shared CPU: indicative numbers",
        "rows": rows,
    }
    if ratios:
        result["label_ratios_to_references"] = ratios
    print(f"blockwise benchmark, {n}^3 uint8, chunks {CHUNKS}")
    print(f"{'case':<58}{'seconds':>9}  extra")
    for name, row in rows.items():
        extra = ", ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if k != "seconds"
        )
        print(f"{name:<58}{row['seconds']:>9.2f}  {extra}")
    if ratios:
        print(f"\nlabel: emseg's time / the reference's (median of {args.repeats} rounds)")
        print(f"{'reference':<40}{'wall':>8}{'CPU':>8}")
        for ref, r in ratios.items():
            print(f"{ref:<40}{r['wall']:>8.2f}{r['cpu']:>8.2f}")
    Path("bench_output").mkdir(exist_ok=True)
    name = "blockwise" if args.only == "all" else f"blockwise-{args.only}"
    Path(f"bench_output/{name}.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
