"""Bounded memory on any input (issue 12, class 5): long lines, devices, pipes.

A 50 MB line used to be held whole (train peaked at 3.6 GB, stats at 8.4 GB) and ``/dev/zero`` with
``max_bytes=1000`` died of MemoryError. Lines are now read in bounded pieces and cut into documents
of at most ``max_document_bytes``; ``max_bytes`` stops the reading; pipes are read once; devices need
``max_bytes``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import MULTI_LANGS, udhr_lines
from tests.test_cli import run_cli
from vocabshift import corpus as corpus_module
from vocabshift.corpus import (
    CorpusConfig,
    CorpusSource,
    corpus_from_paths,
    iter_corpus,
    iter_file,
    plain_text_files,
    split_document,
)
from vocabshift.errors import ConfigError, CorpusError

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def long_line(n_bytes: int) -> bytes:
    """One line of about ``n_bytes`` of UDHR text in eight languages and six scripts, ending on a word."""
    unit = " ".join(line for code in MULTI_LANGS for line in udhr_lines(code)).encode() + b" "
    return (unit * (n_bytes // len(unit) + 1))[:n_bytes].rsplit(b" ", 1)[0]


def run_bounded(fn: Callable[[], object], timeout: float = 60) -> object:
    """Run ``fn`` in a thread and fail (instead of hanging the suite) if it does not finish."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as err:  # re-raised in the test's thread
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"did not finish within {timeout} s (blocked on a pipe?)"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]


@contextmanager
def alarm_after(seconds: int) -> Iterator[None]:
    """Fail a main-thread call that blocks (on a pipe) instead of hanging the suite."""

    def fail(signum, frame):
        raise TimeoutError(f"did not finish within {seconds} s (blocked on a pipe?)")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def feed_pipe(path: Path, data: bytes) -> threading.Thread:
    """Write ``data`` to the FIFO ``path`` from another thread (open blocks until a reader opens)."""

    def write() -> None:
        with open(path, "wb") as fh:
            fh.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.fixture()
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "stream.txt"
    os.mkfifo(path)
    return path


# --------------------------------------------------------------------------------------------------
# Splitting long documents


@settings(max_examples=60, deadline=None)
@given(text=st.text(st.sampled_from("ab é\tሰ😀\n"), max_size=300), limit=st.integers(4, 40))
def test_split_document_pieces_fit_and_join_back(text: str, limit: int) -> None:
    pieces = split_document(text, limit)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= limit for p in pieces)
    assert all(pieces) or pieces == [""]


def test_split_cuts_before_a_space_else_between_characters() -> None:
    assert split_document("aaaa bbbb cccc", 10) == ["aaaa bbbb", " cccc"]
    # No space in the second half: cut between characters, never inside one (ሰ is 3 bytes).
    assert split_document("ሰሰሰሰ", 10) == ["ሰሰሰ", "ሰ"]
    assert split_document("xxxxxxxxxxxxxxx", 10) == ["xxxxxxxxxx", "xxxxx"]


def test_long_line_comes_as_pieces_within_the_limit(tmp_path: Path) -> None:
    line = long_line(10_000)
    path = tmp_path / "a.txt"
    path.write_bytes(b"first\n" + line + b"\r\n" + "ሰ".encode() * 500 + b"\nlast")
    docs = list(iter_corpus(corpus_from_paths(path, max_document_bytes=1000)))
    assert docs[0] == "first" and docs[-1] == "last"
    assert max(len(d.encode()) for d in docs) <= 1000
    pieces = docs[1:-1]
    assert "".join(pieces) == line.decode() + "ሰ" * 500
    assert all(p.startswith(" ") for p in pieces[1:10])  # cut before a space: words stay whole
    assert list(iter_file(path, max_document_bytes=1000)) == docs


def test_replaced_bytes_do_not_push_a_piece_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"\xff" * 5000 + b"\n")  # each invalid byte becomes U+FFFD, 3 bytes
    docs = list(iter_corpus(corpus_from_paths(path, max_document_bytes=100, encoding_errors="replace")))
    assert "".join(docs) == "\ufffd" * 5000 and max(len(d.encode()) for d in docs) <= 100


def test_max_lines_counts_a_split_line_once(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"x" * 250 + b"\nsecond\n")
    docs = list(iter_corpus(corpus_from_paths(path, max_document_bytes=100, max_lines=1)))
    assert docs == ["x" * 100, "x" * 100, "x" * 50]


def test_jsonl_text_is_split_and_huge_records_are_refused(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"text": "word " * 100}) + "\n", encoding="utf-8")
    docs = list(iter_corpus(corpus_from_paths(path, max_document_bytes=64)))
    assert "".join(docs) == "word " * 100 and max(len(d.encode()) for d in docs) <= 64
    monkeypatch.setattr(corpus_module, "MAX_JSON_LINE_BYTES", 200)
    with pytest.raises(CorpusError, match=r"a\.jsonl: line 1 is longer than 256 bytes, too long for one JSON Lines"):
        list(iter_corpus(corpus_from_paths(path, max_document_bytes=64)))


def test_max_document_bytes_is_checked() -> None:
    with pytest.raises(ConfigError, match="max_document_bytes must be an integer of at least 4"):
        corpus_from_paths("x.txt", max_document_bytes=3)


def test_a_20_mb_line_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "one_line.txt"
    path.write_bytes(long_line(20 * MiB) + b"\n")
    tracemalloc.start()
    try:
        n_docs = n_bytes = longest = 0
        for doc in iter_corpus(corpus_from_paths(path)):
            size = len(doc.encode())
            n_docs, n_bytes, longest = n_docs + 1, n_bytes + size, max(longest, size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n_bytes == path.stat().st_size - 1 and longest <= MiB and n_docs >= 20
    assert peak < 12 * MiB, f"peak {peak / MiB:.1f} MiB for a 20 MiB line"  # was > 40 MiB: bytes + str


def test_plain_text_files_leaves_long_lines_to_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"short\n" + b"y" * 300 + b"\n")
    assert plain_text_files(corpus_from_paths(path, max_document_bytes=100)) is None  # the trainer would hold it whole
    files = plain_text_files(corpus_from_paths(path))
    assert files is not None and files.longest_line == 300 and files.documents == 2


# --------------------------------------------------------------------------------------------------
# max_bytes stops the reading; devices


def test_dev_zero_with_max_bytes_stops_after_about_max_bytes() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(CorpusError, match=r"^/dev/zero: the corpus yielded no document: the first has more "
                                              r"than 1000 bytes, over max_bytes=1000 — raise max_bytes$"):
            run_bounded(lambda: list(iter_corpus(corpus_from_paths("/dev/zero", max_bytes=1000))))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024  # a 1003-byte read and the file buffer, not a growing line


def test_dev_zero_yields_at_most_max_bytes() -> None:
    docs = run_bounded(lambda: list(iter_corpus(corpus_from_paths("/dev/zero", max_bytes=3 * MiB))))
    assert sum(len(d) for d in docs) <= 3 * MiB and all(len(d) <= MiB for d in docs)  # type: ignore[union-attr]


def test_a_long_line_past_max_bytes_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"tiny\n" + b"z" * (8 * MiB) + b"\n")
    tracemalloc.start()
    try:
        docs = list(iter_corpus(corpus_from_paths(path, max_bytes=100)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert docs == ["tiny"] and peak < 256 * 1024


def test_a_device_without_max_bytes_is_refused() -> None:
    with pytest.raises(CorpusError, match=r"^/dev/zero: is a device, which may never end \(like /dev/zero\) — "
                                          r"pass --max-bytes"):
        iter_corpus(corpus_from_paths("/dev/zero"))
    with pytest.raises(CorpusError, match="is a device"):
        iter_file(Path("/dev/zero"))


# --------------------------------------------------------------------------------------------------
# Pipes


def test_a_fifo_is_read_once_with_the_right_counts(fifo: Path) -> None:
    lines = [f"line {i} " + "ሰ" * (i % 7) for i in range(5000)]
    feed_pipe(fifo, ("\n".join(lines) + "\n").encode())
    assert plain_text_files(corpus_from_paths(fifo)) is None  # never opened here: the trainer would open it again
    docs = run_bounded(lambda: list(iter_corpus(corpus_from_paths(fifo))))
    assert docs == lines
    with pytest.raises(CorpusError, match=r"stream\.txt: this pipe was read already, and a pipe \(a FIFO or "
                                          r"<\(command\)\) can be read only once — save the stream to a regular file"):
        run_bounded(lambda: list(iter_corpus(corpus_from_paths(fifo))))


def test_a_long_line_from_a_fifo_is_split(fifo: Path) -> None:
    line = long_line(5 * MiB)
    feed_pipe(fifo, line)  # no final newline
    docs = run_bounded(lambda: list(iter_corpus(corpus_from_paths(fifo))))
    assert "".join(docs).encode() == line and max(len(d.encode()) for d in docs) <= MiB  # type: ignore[union-attr]


def test_a_fifo_cannot_be_mixed(fifo: Path, tmp_path: Path) -> None:
    other = tmp_path / "b.txt"
    other.write_text("b\n")
    config = CorpusConfig(sources=[CorpusSource([str(fifo)]), CorpusSource([str(other)])])
    with pytest.raises(CorpusError, match=r"stream\.txt: is a pipe, which cannot be mixed with other sources"):
        iter_corpus(config)


def test_parquet_from_a_pipe_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    os.mkfifo(path)
    pytest.importorskip("pyarrow")
    with pytest.raises(CorpusError, match="parquet is read by random access, which a pipe or device does not allow"):
        run_bounded(lambda: list(iter_corpus(corpus_from_paths(path))))


def test_cli_stats_reads_a_fifo(capsys, fifo: Path, roberta_source: Path) -> None:
    feed_pipe(fifo, b"one two three\n\nfour five\nsix\n")
    with alarm_after(60):  # the CLI sets signal handlers, so it runs in the main thread
        code, out, err = run_cli(capsys, "tokenizer", "stats", "--tokenizer", roberta_source, "--corpus", fifo, "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert result["documents"] == 3 and result["total"]["words"] == 6


# --------------------------------------------------------------------------------------------------
# The commands, in a fresh process: peak memory and process substitution

_PEAK = """
import resource, sys
from cli.main import main
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024
before = rss()
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
# VmHWM is this process image's own peak; ru_maxrss would carry the parent's peak over fork and exec
# (a pytest process of 2 GB makes every child report 2 GB).
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("PEAK_KB", hwm - before, file=sys.stderr)
"""


def peak_kb(*args: object) -> int:
    """Growth of peak RSS (KiB) over the RSS after imports, of ``vocabshift ARGS`` in a fresh process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    # Import what the commands import before measuring the base, so the peak is the work itself.
    code = "import transformers, tokenizers, vocabshift.tokenization.train, vocabshift.tokenization.stats\n" + _PEAK
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stderr.rsplit("PEAK_KB", 1)[1].split()[0])


def one_line_file(path: Path, n_bytes: int) -> Path:
    path.write_bytes(long_line(n_bytes) + b"\n")
    return path


@pytest.mark.slow
def test_stats_on_one_long_line_in_bounded_memory(tmp_path: Path, roberta_source: Path) -> None:
    # Before: the line was encoded whole, ~1.5 GB over the base for 4 MiB (8.4 GB for 50 MB); now ~170 MB.
    corpus = one_line_file(tmp_path / "one_line.txt", 2 * MiB)
    growth = peak_kb("tokenizer", "stats", "--tokenizer", roberta_source, "--corpus", corpus, "--json")
    assert growth < 350 * 1024, f"{growth / 1024:.0f} MiB"


@pytest.mark.slow
def test_train_on_one_long_line_in_bounded_memory(tmp_path: Path, roberta_source: Path) -> None:
    # Before: the Rust trainer read the line whole, ~650 MB over the base for 8 MiB (3.6 GB for 50 MB); now ~235 MB.
    corpus = one_line_file(tmp_path / "one_line.txt", 8 * MiB)
    growth = peak_kb("tokenizer", "train", "--source", roberta_source, "--corpus", corpus,
                     "--vocab-size", 600, "--out", tmp_path / "tok", "--no-progress")
    assert growth < 400 * 1024, f"{growth / 1024:.0f} MiB"
    info = json.loads((tmp_path / "tok" / "vocabshift_tokenizer.json").read_text())
    assert info["bytes"] == corpus.stat().st_size - 1 and info["documents"] >= 8


@pytest.mark.slow
def test_cli_reads_process_substitution(tmp_path: Path, roberta_source: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("one two\nthree\n\nfour five six\n")
    cmd = (f"{shlex.quote(sys.executable)} -m cli.main tokenizer stats --tokenizer {shlex.quote(str(roberta_source))}"
           f" --corpus <(cat {shlex.quote(str(text))}) --json")
    proc = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = json.loads(proc.stdout)
    assert result["documents"] == 3 and result["total"]["words"] == 6
