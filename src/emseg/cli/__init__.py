"""The ``emseg`` command line: one entry point, one subcommand per verb."""

from emseg.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
