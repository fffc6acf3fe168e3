"""Argument helpers shared by the CLI verbs."""

from __future__ import annotations

import argparse
from typing import Any

from emseg.cli._main import HelpFormatter


def add_command(
    sub: Any, name: str, *, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Add a subcommand with the shared formatter (defaults shown in --help)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=description or help, formatter_class=HelpFormatter
    )
    return parser


def add_spacing(parser: argparse.ArgumentParser, *, help_extra: str = "") -> None:
    parser.add_argument(
        "--spacing",
        nargs="+",
        type=float,
        metavar="NM",
        default=None,
        help="voxel size in nm, z y x (or y x for 2D); overrides the file's metadata" + help_extra,
    )


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it exists (off: an existing OUT is an error)",
    )


def add_execution(parser: argparse.ArgumentParser, *, resume: bool = True) -> None:
    """--workers / --scheduler / --resume for verbs that run blockwise."""
    parser.add_argument(
        "--workers", type=int, default=2, help="parallel workers (threads or processes)"
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDR",
        help="address of a running Dask scheduler (tcp://host:port); 'local' starts a LocalCluster",
    )
    if resume:
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue a killed job, skipping blocks already written",
        )


def add_block_options(
    p: argparse.ArgumentParser, *, block_default: str = "chunks grown to ~128^3"
) -> None:
    """--block / --chunks / --no-progress for verbs that write a blockwise output."""
    p.add_argument(
        "--block",
        nargs="+",
        type=int,
        default=None,
        metavar="N",
        help=f"block (write region) shape in voxels, z y x; default: {block_default}",
    )
    p.add_argument(
        "--chunks",
        nargs="+",
        type=int,
        default=None,
        metavar="N",
        help="output chunk shape, z y x (default 64^3, or 256^2 in 2D)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def one_or_all(values: list[float] | list[int] | None) -> Any:
    """None, one value (when one was given) or a tuple: for options that take 1 or ndim values."""
    if values is None:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def blockwise_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The blockwise engine's keyword arguments from --block, --chunks, --no-progress,
    --workers, --scheduler, --resume and --overwrite (:func:`add_block_options`,
    :func:`add_execution`, :func:`add_overwrite`)."""
    return {
        "block_shape": one_or_all(args.block),
        "chunks": one_or_all(args.chunks),
        "n_workers": args.workers,
        "scheduler": args.scheduler,
        "resume": args.resume,
        "overwrite": args.overwrite,
        "progress": not args.no_progress,
    }
