"""Exceptions raised by emseg.

Every class derives from :class:`EmsegError` *and* from the builtin that
describes the kind of problem, so ``except ValueError`` keeps working for
callers that do not know emseg. The CLI turns any :class:`EmsegError` into
one line on stderr and a non-zero exit status.
"""

from __future__ import annotations


class EmsegError(Exception):
    """Base class of every error emseg raises on purpose."""


class EmsegValueError(EmsegError, ValueError):
    """A parameter has the right type but a wrong value."""


class EmsegTypeError(EmsegError, TypeError):
    """A parameter is the wrong kind of thing (e.g. float labels)."""


class FormatError(EmsegError, ValueError):
    """A file cannot be read: unsupported, corrupt or truncated."""


class UnsupportedFormatError(FormatError):
    """The file's extension or layout is not one emseg reads or writes."""


class DatasetNotFoundError(EmsegError, FileNotFoundError):
    """An input file, folder or dataset inside a container does not exist."""


class OutputExistsError(EmsegError, FileExistsError):
    """An output exists and would be replaced; pass ``overwrite=True``."""


class ChunkAlignmentError(EmsegError, ValueError):
    """Blocks are not aligned to the output's chunks where that is required."""


class SchedulerError(EmsegError, ConnectionError):
    """A Dask scheduler cannot be reached or started."""


class DataUnavailableError(EmsegError, FileNotFoundError):
    """A real dataset from ``../shared/data`` (or ``$EMSEG_DATA``) is missing."""


__all__ = [
    "ChunkAlignmentError",
    "DataUnavailableError",
    "DatasetNotFoundError",
    "EmsegError",
    "EmsegTypeError",
    "EmsegValueError",
    "FormatError",
    "OutputExistsError",
    "SchedulerError",
    "UnsupportedFormatError",
]


class EmsegWarning(UserWarning):
    """Base class of the warnings emseg gives to users."""


class SpacingWarning(EmsegWarning):
    """The voxel size of an input is not known and defaults to 1.0 per axis."""


__all__ += ["EmsegWarning", "SpacingWarning"]
