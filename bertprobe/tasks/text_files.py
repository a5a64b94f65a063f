"""Reading the user's text files: UTF-8, lines numbered from 1, errors that name file and line.
Shared by every reader (CoNLL columns, TSV/CSV/JSON lines)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from bertprobe.errors import DataFormatError


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of a UTF-8 text file numbered from 1 (a byte order mark dropped); a byte
    that is not UTF-8 raises :func:`not_utf8_error`'s error instead of ``UnicodeDecodeError``."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            yield from enumerate(handle, start=1)
    except UnicodeDecodeError as error:
        raise not_utf8_error(path, error) from error


def not_utf8_error(path: Path, error: UnicodeDecodeError) -> DataFormatError:
    """The :class:`DataFormatError` for a file that failed to decode as UTF-8: it names the
    file, the line (counted at ``\\n``) and the first byte that is not UTF-8."""
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                byte = raw[bad.start : bad.start + 1].hex()
                return DataFormatError(
                    f"{path}:{line_number}: byte 0x{byte} is not UTF-8; data files must be UTF-8 encoded "
                    "(convert the file, e.g. with iconv, and read it again)"
                )
    return DataFormatError(f"{path}: not UTF-8 ({error.reason}); data files must be UTF-8 encoded")
