"""Keeping `kvwhisper transcribe`'s outputs whole: the output folder checked before any work, one error
for inputs whose outputs would share a name, Ctrl-C deferred while a file's outputs are written, and
damaged-audio warnings as one line each."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

from . import CLIError


def prepare_output_dir(output_dir: str) -> str:
    """Create ``output_dir`` (and missing parents) and check that files can be written there.

    CLIError, named as the output folder's, when it is a file, cannot be created, is not writable or its
    file system is full: so the problem shows before any file is transcribed, not after each one."""
    where = f"output folder {output_dir}"
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise CLIError(f"{where}: is a file, not a folder")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{where}: cannot create it ({e.strerror or e})") from e
    probe = os.path.join(output_dir, f".kvwhisper-probe.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CLIError(f"{where}: cannot write there ({e.strerror or e})") from e
    with contextlib.suppress(OSError, AttributeError):
        st = os.statvfs(output_dir)
        if st.f_bavail * st.f_frsize == 0 and st.f_blocks > 0:
            raise CLIError(f"{where}: no space left on its file system")
    return output_dir


def check_distinct_outputs(files: list[str], output_dir: str, basename) -> None:
    """CLIError before any work when two different inputs would write the same output names.

    ``basename(path)`` is the writers' name for an input's outputs. The same file given twice is not a
    clash (it would write the same outputs)."""
    seen: dict[str, str] = {}
    for path in files:
        name = basename(path)
        same = seen.get(name)
        if same is not None and _identity(same) != _identity(path):
            target = os.path.join(output_dir, name)
            raise CLIError(
                f"{same} and {path} would both be written to {target}.*: "
                "rename one, or transcribe them into different --output-dir folders"
            )
        seen.setdefault(name, path)


def _identity(path: str) -> str:
    return path if path == "-" else os.path.realpath(path)


@contextlib.contextmanager
def interrupt_after() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise KeyboardInterrupt: a file's outputs are
    written as a whole set. Outside the main thread it does nothing (signals go to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def audio_warnings_as_lines() -> Iterator[None]:
    """Print AudioDamageWarning as one `kvwhisper: warning: ...` line on stderr; other warnings as before."""
    from ..audio import AudioDamageWarning

    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, AudioDamageWarning):
            print(f"kvwhisper: warning: {message}", file=sys.stderr, flush=True)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        yield
    finally:
        warnings.showwarning = show
