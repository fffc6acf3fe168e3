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
