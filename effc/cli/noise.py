"""Keep TVM's and LLVM's own output off the user's terminal unless --debug.

TVM's C++ logs (`Fast mode segfaults when ...`, `BlockBuilder destroyed with remaining blocks!`) and LLVM's messages
are written to file descriptor 2 by native code, past Python's sys.stderr; Python warnings (UserWarning dumps) go
through sys.stderr. While a command runs, fd 2 points at a temporary file and sys.stderr at a copy of the terminal,
so effc's own messages (progress, warnings, the error line) still reach it and the error stays the last line. What
native code printed is kept for a crash reproducer.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
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
