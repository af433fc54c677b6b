"""Atomic writes: a failed run never leaves a half-written output behind, and never replaces a device or a FIFO.

OS errors while writing (read-only folder, full disk, no permission) become EffcError naming the path and the OS's
reason: they are the environment's fault, not effc's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from effc.errors import EffcError

# errno values that mean "this location cannot take the output": the user's to fix, exit 2
ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT,
                                errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EFBIG, errno.ENAMETOOLONG, errno.ENXIO,
                                errno.ENODEV, errno.EBUSY, errno.ETXTBSY, errno.ELOOP, errno.EXDEV, errno.ENOTEMPTY})
# every output location a command has tried to write, so a later failure can tell a full disk from a bug
attempted_outputs: list[Path] = []


def refuse_special(path: str | os.PathLike, *, directory: bool = False) -> Path:
    """`path`, or EffcError when something that is not a regular file (or, with `directory`, a folder) is there."""
    final = Path(path)
    try:
        mode = os.stat(final).st_mode
    except FileNotFoundError:
        return final
    except OSError as exc:
        raise EffcError(f"cannot write {final}: {exc.strerror}") from None
    if directory and not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
        raise EffcError(f"cannot write {final}: it exists and is not a folder (a device, FIFO or socket)")
    if not directory and stat.S_ISDIR(mode):
        raise EffcError(f"cannot write {final}: it is a folder")
    if not directory and not stat.S_ISREG(mode):
        raise EffcError(f"cannot write {final}: it is not a regular file (a device, FIFO or socket); give a file path")
    return final


def check_writable(path: str | os.PathLike) -> None:
    """EffcError now, before any work, when `path` cannot be written (folder read-only or missing, special file)."""
    final = refuse_special(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".check", dir=final.parent)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise EffcError(f"cannot write {final}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    With `directory=True` the temporary path is an empty folder, and an existing folder at
    `path` is replaced whole. Refuses (EffcError) to replace anything but a regular file (or folder).
    """
    final = refuse_special(path, directory=directory)
    attempted_outputs.append(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        raise EffcError(f"cannot write {final}: {exc.strerror or exc}") from None
    try:
        yield tmp
        refuse_special(final, directory=directory)  # something may have appeared there meanwhile
        if directory:
            if final.exists():
                old = final.with_name(f".{final.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
        else:
            os.replace(tmp, final)
    except BaseException as exc:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            raise EffcError(f"cannot write {final}: {exc.strerror}") from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
