"""Entry point of the ``emseg`` command.

Each verb lives in its own module ``emseg.cli._<verb>`` that defines
``register(subparsers)``; the parser calls ``args.func(args)``. The CLI only
parses, calls one public function and reports: an :class:`EmsegError`
becomes one line on stderr and exit status 2, never a traceback (``--debug``
shows it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from emseg import __version__
from emseg.errors import EmsegError

#: The verbs, in the order ``emseg --help`` lists them (module emseg.cli._<name>).
COMMANDS = [
    # start here
    "demo",
    # files
    "info",
    "convert",
    # blockwise processing
    "blockwise-filter",
    "label",
    # semantic segmentation
    "forest",
    "classical",
    "train",
    "predict",
    "models",
    # instances
    "instances",
    "segment",
    # evaluation
    "evaluate",
    # measurement and the catalog
    "measure",
    "catalog",
    "query",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the description's line breaks."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``emseg`` parser; with `only` (a verb), only that verb's module is imported.

    Some verbs' modules import heavy libraries when they register their options,
    so a call such as ``emseg evaluate ...`` registers just ``evaluate``
    (``emseg --help`` and unknown verbs still see every verb).
    """
    parser = argparse.ArgumentParser(
        prog="emseg",
        description="Automated analysis of large-scale electron microscopy: "
        "read, segment, evaluate, measure and catalog EM images.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"emseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS if only not in COMMANDS else [only]:
        module = importlib.import_module(f"emseg.cli._{name.replace('-', '_')}")
        module.register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``emseg`` command; return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(verb)
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.captureWarnings(True)
    try:
        status = args.func(args)
    except EmsegError as exc:
        if args.debug:
            raise
        print(f"emseg {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # permissions, full disk, ...: a clear line, not a traceback
        if args.debug:
            raise
        print(f"emseg {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
