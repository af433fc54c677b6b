"""Keep TVM's and LLVM's own output off the user's terminal unless --debug.

TVM's C++ logs (`Fast mode segfaults when ...`, `BlockBuilder destroyed with remaining blocks!`) and LLVM's messages
are written to file descriptor 2 by native code, past Python's sys.stderr; Python warnings (UserWarning dumps) go
through sys.stderr. While a command runs, fd 2 points at a temporary file and sys.stderr at a copy of the terminal,
so effc's own messages (progress, warnings, the error line) still reach it and the error stays the last line. What
native code printed is kept for a crash reproducer.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator

CAPTURED_LIMIT = 1 << 20  # bytes of native output kept for a reproducer


class NativeStderr:
    """What native code wrote to fd 2 while the command ran (read it with `text()`)."""

    def __init__(self, file=None):
        self.file = file

    def text(self) -> str:
        if self.file is None:
            return ""
        try:
            self.file.flush()
            self.file.seek(0)
            return self.file.read(CAPTURED_LIMIT).decode(errors="replace")
        except (OSError, ValueError):
            return ""


@contextlib.contextmanager
def quiet_native_output(debug: bool) -> Iterator[NativeStderr]:
    if debug:
        yield NativeStderr()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            on_fd2 = sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):  # a test runner's in-memory stream
            on_fd2 = False
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            capture = tempfile.TemporaryFile()
        except OSError:
            yield NativeStderr()
            return
        old_stderr = sys.stderr
        os.dup2(capture.fileno(), 2)
        if on_fd2:
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=old_stderr.encoding, errors="backslashreplace")
        try:
            yield NativeStderr(capture)
        finally:
            if on_fd2:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.flush()
                    sys.stderr.close()
                sys.stderr = old_stderr
            os.dup2(saved, 2)
            os.close(saved)


def release_frames(exc: BaseException) -> None:
    """Free what the failed command's frames still hold, while fd 2 is captured: TVM objects (a BlockBuilder left
    with open blocks) print from their destructors, which would otherwise run after the error line. The traceback's
    lines stay printable for --debug and crash reproducers."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]
    gc.collect()
