"""Every error bertprobe raises on purpose, in one place.

Each is a :class:`BertprobeError`, so a caller (the command line, a notebook) can catch
what bertprobe means to say in one ``except``; the command line prints their message in one
line, without a traceback. Each keeps the built-in base it had (``ValueError`` for bad input,
``RuntimeError`` for a state the run met), so code that caught those still does. Plain
Python: importing it loads nothing else.
"""

from __future__ import annotations


class BertprobeError(Exception):
    """Bad input or a state the user must resolve; the message says which and what to do."""


class ConfigError(BertprobeError, ValueError):
    """An option value that cannot work; the message names the option."""


class LayerSpecError(BertprobeError, ValueError):
    """A layer strategy that cannot be parsed or does not fit the model."""


class DataFormatError(BertprobeError, ValueError):
    """Input data that cannot be read; the message names the file and line."""


class NoRecordsError(BertprobeError, ValueError):
    """Nothing to tabulate or plot: a folder without any result record (or none of the kind)."""


class ModelLoadError(BertprobeError, RuntimeError):
    """The model cannot be loaded; the message says what to do instead."""


class CacheError(BertprobeError, RuntimeError):
    """The cache cannot be written (no space, no permission); the message says where."""


class CheckpointError(BertprobeError, RuntimeError):
    """A checkpoint that must not be overwritten, or cannot be resumed by this run."""


class RecordWriteError(BertprobeError, RuntimeError):
    """A finished run's record could not be written where it belongs; the message says where
    it was kept instead."""


class NonFiniteLossError(BertprobeError, RuntimeError):
    """The training loss became NaN or infinite (the command line exits with status 3)."""


class HeapTrimUnavailableError(BertprobeError, RuntimeError):
    """This C library has no ``malloc_trim`` (it is glibc's; macOS, Windows and musl lack it)."""
