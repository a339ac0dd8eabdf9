"""Where ``get -o PATH`` writes: replace a regular file atomically, write through the rest.

As ``cp`` does: a regular file (or a new one) is written to a temp file beside it and
renamed over it only when complete and verified, with the mode a new file gets under the
umask (an existing file keeps its own); a symlink is followed to its target; a character
device, FIFO or socket is written to directly.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import BinaryIO

from lakery_fsspec.cli.errors import Failure

__all__ = ["OutputError", "is_direct", "resolve_output", "write_output"]


class OutputError(Failure):
    """The output path cannot be written."""


def resolve_output(output: str, object_name: str) -> Path:
    """The file ``-o output`` names: a symlink's target, a name inside a directory."""
    target = Path(os.path.realpath(output)) if Path(output).is_symlink() else Path(output)
    if target.is_dir():
        target = target / object_name
    if not target.parent.is_dir():
        msg = f"Cannot write {output}: the folder {target.parent} does not exist."
        raise OutputError(msg, "Create the folder, or name another output file with -o.")
    return target


def is_direct(target: Path) -> bool:
    """Whether ``target`` is written through rather than replaced (a device, FIFO, socket)."""
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return False
    return not stat.S_ISREG(mode)


def write_output(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` with a sink for ``target``: straight into a device, FIFO or socket;
    otherwise into a temp file renamed over ``target`` when ``write`` returns."""
    if is_direct(target):
        with _opened_direct(target) as sink:
            write(sink)
        return
    try:
        handle, temp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
    except OSError as error:
        raise _cannot_write(target, error) from None
    try:
        with os.fdopen(handle, "wb") as sink:
            write(sink)
        _copy_mode(target, temp)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _opened_direct(target: Path) -> Generator[BinaryIO]:
    try:
        if stat.S_ISSOCK(target.stat().st_mode):
            with socket.socket(socket.AF_UNIX) as connection:
                connection.connect(str(target))
                with connection.makefile("wb") as sink:
                    yield sink
            return
        sink = open(target, "wb")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise _cannot_write(target, error) from None
    with sink:
        yield sink


def _copy_mode(target: Path, temp: str) -> None:
    """Give ``temp`` the mode ``target`` has, or a new file's under the umask (mkstemp
    makes 0600), and an existing file's owner where we may."""
    try:
        existing = target.stat()
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        return
    os.chmod(temp, stat.S_IMODE(existing.st_mode))
    with contextlib.suppress(OSError):  # only root may give a file to someone else
        os.chown(temp, existing.st_uid, existing.st_gid)


def _cannot_write(target: Path, error: OSError) -> OutputError:
    return OutputError(
        f"Cannot write the output file {target}: {error.strerror or error}.",
        "Choose an output path you can write to (-o FILE), or fix its permissions.",
    )
