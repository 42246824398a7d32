"""Safe outputs: atomic directories, one writer at a time, never over an input.

A stage writes into a temporary sibling of its output directory and renames it into place only when
everything succeeded, so a failure (or Ctrl-C) never leaves a half-written output behind and an
existing output is only replaced when the user asked for it with ``force``.

Every stage function that writes an output is wrapped in :func:`writes_output`, which before any work

- refuses an output that is, contains or lies inside one of the stage's inputs (``--force`` or not:
  replacing ``--out`` atomically would delete the input it was computed from);
- takes an exclusive lock on the output (``fcntl.flock`` on ``.<name>.lock`` beside it, holding the
  owner's pid), so a second run into the same output stops at once with a line naming the first;
- turns "no space left on device" into one :class:`DiskFullError` naming the file being written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from vocabshift.errors import DiskFullError, OutputExistsError, OutputLockedError, UnsafeOutputError

F = TypeVar("F", bound=Callable[..., Any])

# Config fields (at any depth) that name files or directories a stage reads. Only values that exist on
# disk count: a missing path cannot be destroyed, and a manifest entry name is not a path.
INPUT_FIELDS = frozenset({
    "model", "tokenizer", "source", "target", "source_vectors", "target_vectors", "dictionary", "alignment",
    "run", "checkpoint", "baseline", "speed_text", "path", "paths", "corpus", "keep_corpus", "protect_corpus",
    "replay", "token_vectors", "fasttext_model", "sources", "languages", "source_language", "vectors",
    "metrics_jsonl", "source_corpus", "extra_corpora",
})


def check_output_path(out: str | Path, force: bool) -> Path:
    """Refuse an existing output unless ``force``; returns the path. Call before any expensive work."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError("output already exists", path=out, hint="pass --force to replace it")
    return out


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (``os.umask`` sets it to read it,
    and another thread creating a file meanwhile would get the temporary mask)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_output_dir(out: Path) -> Path:
    """A new directory beside ``out`` that will be renamed to it, with the permissions ``mkdir`` gives
    (``mkdtemp`` makes it private, 0700, and a renamed output would stay unreadable to the group)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``out``; on success it replaces ``out``.

    On any exception the temporary directory is removed and ``out`` is left exactly as it was.
    """
    out = check_output_path(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_output_dir(out)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if out.exists():
            # Move the old output aside first so that a failed rename cannot lose both copies.
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "old")
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old / "old", out)  # interrupted between the two renames: the old output goes back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:  # a signal (SIGTERM, Ctrl-C) during the swap: nothing half-done stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary sibling and rename it over ``path``: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_output_file(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of the file ``out`` to write; on success it is renamed over ``out``.

    The temporary name ends in ``out``'s suffix, so readers that go by it (transformers with a ``.gguf``)
    can check the file before it is renamed. On any exception it is removed and ``out`` is left as it was.
    """
    out = check_output_path(out, force)
    if out.is_dir():
        raise OutputExistsError("output is a directory, not a file", path=out, hint="name a file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it (mkstemp makes it private)
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def empty_output_dir(out: str | Path, force: bool = False) -> Path:
    """A missing or empty directory to write files into (often a stage's temporary output directory);
    a directory with files in it is refused unless ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError("output exists and is not a directory", path=out)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError("output directory is not empty", path=out, hint="pass --force to write into it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _real(path: str | Path) -> Path:
    """``path`` absolute with symlinks resolved (as far as it exists), so aliases compare equal."""
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def input_paths(config: Any) -> list[tuple[str, Path]]:
    """``(field, path)`` for every existing input named in ``config`` (a stage config, at any depth).

    Walks dataclass fields named in :data:`INPUT_FIELDS` (a mapping in one, such as eval's
    ``extra_corpora``, holds inputs under every key), lists, the keys of ``options`` (an init method's)
    named in :data:`INPUT_FIELDS`, and corpus sources; ``out`` itself is never an input.
    """
    found: list[tuple[str, Path]] = []

    def visit(value: Any, name: str, depth: int, every_key: bool = True) -> None:
        if depth > 8 or value is None:
            return
        if isinstance(value, (str, Path)):
            text = str(value)
            if text and "\0" not in text and len(text) < 4096:
                with contextlib.suppress(OSError, ValueError):
                    if os.path.lexists(text):
                        found.append((name, _real(text)))
                    elif ":" in text:  # FOLDER:SPLIT of a 🤗 datasets corpus: the folder is the input
                        from vocabshift.corpus import split_spec

                        if (named := split_spec(text)) is not None:
                            found.append((name, _real(named[0])))
            return
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                if f.name in INPUT_FIELDS:
                    visit(getattr(value, f.name), f.name if f.name not in ("paths", "sources") else name, depth + 1)
                elif depth == 0 and f.name == "options":
                    visit(getattr(value, f.name), f.name, depth + 1, every_key=False)
        elif isinstance(value, dict):
            for key, item in value.items():
                if every_key or str(key) in INPUT_FIELDS:
                    visit(item, name if every_key else f"{name}.{key}", depth + 1)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item, name, depth + 1)

    visit(config, "", 0)
    return found


def refuse_overlap(out: str | Path, inputs: Iterable[tuple[str, str | Path]]) -> None:
    """Refuse an output that is, contains or lies inside an input, ``force`` or not.

    Writing ``--out`` replaces it as a whole, so an output equal to (or holding) an input destroys that
    input; an output inside an input directory changes the input while it is being read.
    """
    target = _real(out)
    for name, path in inputs:
        real = _real(path)
        flag = f"--{name.split('.')[-1].replace('_', '-')}" if name else "an input"
        if target == real:
            problem = f"the output is the input given as {flag} ({path})"
        elif real.is_relative_to(target):
            problem = f"the output contains the input given as {flag} ({path})"
        elif target.is_relative_to(real):
            problem = f"the output lies inside the input given as {flag} ({path})"
        else:
            continue
        raise UnsafeOutputError(f"{problem}: refusing to write there, even with --force, so that the input "
                                "is never lost", path=out, hint="choose an --out outside every input")


def _lock_file(out: Path) -> Path:
    # One lock per process of a distributed run (each rank writes its own part of a run directory), so
    # the ranks of one run never block each other while a second run's ranks do.
    rank = os.environ.get("RANK", "0") if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else "0"
    suffix = "" if rank in ("", "0") else f".rank{rank}"
    return out.parent / f".{out.name}{suffix}.lock"


# Set by the command line when it starts (time.time()): an output written after that moment was written by
# a concurrent run, and is not replaced even with --force (None in library use: a long-lived process).
COMMAND_STARTED: float | None = None


def _written_since_start(out: Path, lock: Path) -> float | None:
    """When ``out`` was last written, if after this command started; else None.

    Compared on the filesystem's own clock: the lock file just written says what "now" is there, and
    the local clock only measures how long ago the command started (so a skewed network share works).
    """
    if COMMAND_STARTED is None:
        return None
    try:
        written, now_there = os.stat(out).st_mtime, os.stat(lock).st_mtime
    except OSError:
        return None
    started_there = now_there - max(0.0, time.time() - COMMAND_STARTED)
    # The margin covers file timestamps' coarse clock (a tick behind time.time()) and an output finished
    # just as this command started; a concurrent run finishes seconds later (its imports alone take that).
    return written if written > started_there + 0.5 else None


def _rank_suffix(lock: Path, out: Path) -> str:
    """The rank part of a lock file's name ("" for the main process)."""
    return lock.name[len(out.name) + 1:-len(".lock")]


def _recover_leftovers(out: Path) -> None:
    """Clean up after a writer of ``out`` that was killed (SIGKILL, power loss): we hold the lock, so
    every temporary sibling belongs to a dead process. A killed swap in :func:`atomic_output_dir` may
    have moved the old output aside without renaming the new one in: the old one is put back."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-[A-Za-z0-9_]{{8}}({re.escape(out.suffix)})?")
    try:
        siblings = [p for p in out.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return
    for leftover in sorted(siblings):
        saved = leftover / "old"
        if leftover.name.startswith(f".{out.name}.old-") and saved.is_dir() and not os.path.lexists(out):
            os.rename(saved, out)
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:  # a file's temporary sibling (atomic_output_file)
            with contextlib.suppress(OSError):
                leftover.unlink()


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``out`` (a lock file beside it) for the duration of the block.

    A second holder fails at once with :class:`OutputLockedError` naming the first one's pid. The lock file
    is removed on release; the inode check after ``flock`` makes removal race-free (a waiter that locked
    a file already unlinked tries again).
    """
    out = Path(os.path.abspath(out))
    path = _lock_file(out)
    created = [d for d in [out.parent, *out.parent.parents] if not d.exists()]  # removed again if left empty
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputExistsError(f"cannot create the output's parent directory ({err.strerror})",
                                path=out.parent) from err
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputExistsError(f"cannot create the lock file beside the output ({err.strerror})",
                                    path=path, hint="write somewhere you have write access") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise OutputLockedError(f"another vocabshift process (pid {holder}) is writing this output",
                                    path=out, hint="wait for it to finish, or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder released and removed this file between our open and flock: again
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        if not _rank_suffix(path, out):
            _recover_leftovers(out)
            written = _written_since_start(out, path)
            if written is not None:
                raise OutputLockedError(
                    f"another vocabshift process finished writing this output at "
                    f"{time.strftime('%H:%M:%S', time.localtime(written))}, after this one started: not replacing "
                    "it", path=out, hint="run again to replace it (with --force), or choose another --out")
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        for directory in created:  # deepest first; a failed run leaves no empty parent behind
            try:
                directory.rmdir()
            except OSError:
                break


def _disk_full(err: BaseException) -> OSError | None:
    """The "no space left" error in ``err``'s chain, also when a library re-raised it as text."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return current
        text = str(current)
        if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return OSError(errno.ENOSPC, "No space left on device")
        current = current.__cause__ or current.__context__
    return None


def disk_full_error(err: BaseException, fallback: str | Path) -> DiskFullError | None:
    """A :class:`DiskFullError` for ``err`` when it is (or wraps) ENOSPC/EDQUOT, else None."""
    full = _disk_full(err)
    if full is None:
        return None
    where = full.filename or getattr(err, "filename", None) or fallback
    return DiskFullError(f"no space left on device while writing {where}", path=None,
                         hint="free some space and run again; nothing was replaced")


@contextlib.contextmanager
def output_guard(out: str | Path, inputs: Iterable[tuple[str, str | Path]] = ()) -> Iterator[Path]:
    """Refuse an output overlapping an input, lock it, and report a full disk as one clear error."""
    refuse_overlap(out, inputs)
    with output_lock(out):
        try:
            yield Path(out)
        except Exception as err:
            full = None if isinstance(err, DiskFullError) else disk_full_error(err, out)
            if full is None:
                raise
            raise full from err


def writes_output(fn: F) -> F:
    """Decorate a stage function ``fn(config, ...)`` whose ``config.out`` is its output: run it under
    :func:`output_guard` with the config's inputs (:func:`input_paths`). ``out=None`` runs unguarded."""

    @functools.wraps(fn)
    def wrapper(config: Any, *args: Any, **kwargs: Any) -> Any:
        out = getattr(config, "out", None)
        if out is None:
            return fn(config, *args, **kwargs)
        with output_guard(out, input_paths(config)):
            return fn(config, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
