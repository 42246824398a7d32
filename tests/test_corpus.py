"""Tests for vocabshift.corpus: formats, compression, errors, limits, shuffling and mixing."""

from __future__ import annotations

import bz2
import collections
import gzip
import json
import lzma
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from vocabshift.corpus import (
    CorpusConfig,
    CorpusSource,
    corpus_from_paths,
    iter_corpus,
    iter_file,
    mixing_probabilities,
    resolve_files,
)
from vocabshift.errors import ConfigError, CorpusError

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data,
    ".gz": gzip.compress,
    ".xz": lzma.compress,
    ".bz2": bz2.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}

# Documents that survive a .txt round trip: no line breaks, no trailing \r, no leading BOM.
line_docs = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\ufeff"), max_size=30),
    max_size=20,
)


def write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path``, compressed according to the path's last suffix."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    compress = COMPRESSORS.get(path.suffix, COMPRESSORS[""])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compress(raw))
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    return write(path, "".join(f"{line}\n" for line in lines))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def write_parquet(path: Path, columns: dict[str, list], row_group_size: int | None = None) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def read_all(paths: list[str | Path] | str | Path, **kwargs) -> list[str]:
    return list(iter_corpus(corpus_from_paths(paths, **kwargs)))


# --------------------------------------------------------------------------------------------------
# Formats and compression


@pytest.mark.parametrize("compression", list(COMPRESSORS))
@pytest.mark.parametrize("fmt", ["txt", "jsonl"])
@settings(max_examples=15, deadline=None)
@given(docs=line_docs)
def test_round_trip_every_format_and_compression(fmt: str, compression: str, docs: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"corpus.{fmt}{compression}"
        if fmt == "txt":
            write_lines(path, docs)
        else:
            write_jsonl(path, [{"text": d, "id": i} for i, d in enumerate(docs)])
        assert list(iter_file(path)) == docs


@settings(max_examples=30, deadline=None)
@given(docs=st.lists(st.text(max_size=50), max_size=10))
def test_jsonl_keeps_any_text(docs: list[str]) -> None:
    # JSON escapes newlines, \r, BOMs and lone surrogates: a document may hold anything.
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(Path(tmp) / "a.jsonl", [{"text": d} for d in docs])
        assert list(iter_file(path)) == docs


def test_unknown_suffix_is_plain_text(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "notes.md", ["# title", "body"])
    assert list(iter_file(path)) == ["# title", "body"]
    path = write_lines(tmp_path / "data.csv.gz", ["a,b", "1,2"])
    assert list(iter_file(path)) == ["a,b", "1,2"]


def test_jsonl_custom_field_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '{"content": "one"}\n\n   \n{"content": "two", "text": "no"}\n')
    assert list(iter_file(path, text_field="content")) == ["one", "two"]
    assert read_all(path, text_field="content") == ["one", "two"]
    per_source = CorpusConfig(sources=[CorpusSource([str(path)], text_field="content")])
    assert list(iter_corpus(per_source)) == ["one", "two"]


def test_jsonl_null_is_an_empty_document(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": None}, {"text": "x"}, {"text": ""}])
    assert list(iter_file(path)) == ["", "x", ""]
    assert read_all(path) == ["x"]


def test_parquet(tmp_path: Path) -> None:
    texts = [f"doc {i}" for i in range(2500)]
    path = write_parquet(tmp_path / "a.parquet", {"id": list(range(2500)), "text": texts}, row_group_size=700)
    assert list(iter_file(path)) == texts
    assert read_all(path, max_documents=3) == texts[:3]


def test_parquet_custom_column_nulls_and_binary(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "a.parquet", {"body": ["a", None, "c"], "raw": [b"x", b"\xc3\xa9", b""]})
    assert list(iter_file(path, text_field="body")) == ["a", "", "c"]
    assert read_all(path, text_field="body") == ["a", "c"]
    assert list(iter_file(path, text_field="raw")) == ["x", "é", ""]


def test_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"\xef\xbb\xbffirst\r\nsecond\r\nthird")
    assert list(iter_file(path)) == ["first", "second", "third"]
    path = write(tmp_path / "a.jsonl.gz", b'\xef\xbb\xbf{"text": "x"}\r\n{"text": "y\\r"}\r\n')
    assert list(iter_file(path)) == ["x", "y\r"]  # only the line ending goes, not \r inside the text


def test_only_newline_splits_documents(tmp_path: Path) -> None:
    # str.splitlines would also split on these; a corpus line is a \n-terminated line.
    path = write_lines(tmp_path / "a.txt", ["a\u2028b\x0bc\x1cd\x85e"])
    assert list(iter_file(path)) == ["a\u2028b\x0bc\x1cd\x85e"]


# --------------------------------------------------------------------------------------------------
# Paths


def test_directories_are_recursive_and_sorted(tmp_path: Path) -> None:
    write_lines(tmp_path / "d" / "b.txt", ["b"])
    write_lines(tmp_path / "d" / "a" / "z.txt", ["az"])
    write_lines(tmp_path / "d" / "a.txt", ["a"])
    write_lines(tmp_path / "d" / "c.jsonl", [])
    write_lines(tmp_path / "d" / ".hidden.txt", ["hidden"])
    write_lines(tmp_path / "d" / ".cache" / "x.txt", ["cached"])
    files = resolve_files([str(tmp_path / "d")])
    assert [f.relative_to(tmp_path / "d").as_posix() for f in files] == [
        "a/z.txt",
        "a.txt",
        "b.txt",
        "c.jsonl",
    ]
    assert read_all(tmp_path / "d") == ["az", "a", "b"]


def test_globs_are_sorted_and_files_are_deduplicated(tmp_path: Path) -> None:
    for name in ["c.txt", "a.txt", "b.txt", "skip.jsonl"]:
        write_lines(tmp_path / name, [name])
    write_lines(tmp_path / "sub" / "d.txt", ["sub/d.txt"])
    assert read_all(str(tmp_path / "*.txt")) == ["a.txt", "b.txt", "c.txt"]
    assert read_all(str(tmp_path / "**" / "*.txt")) == ["a.txt", "b.txt", "c.txt", "sub/d.txt"]
    write_lines(tmp_path / "b" / "x.txt", ["b/x.txt"])
    assert read_all(str(tmp_path / "**" / "*.txt"))[:3] == ["a.txt", "b/x.txt", "b.txt"]
    twice = [str(tmp_path / "b.txt"), str(tmp_path / "*.txt")]
    assert [f.name for f in resolve_files(twice)] == ["b.txt", "a.txt", "c.txt"]


def test_corpus_from_paths_accepts_one_path(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.txt", ["x"])
    config = corpus_from_paths(path, max_documents=5)
    assert config.sources[0].paths == [str(path)]
    assert config.max_documents == 5
    assert CorpusSource(str(path)).paths == [str(path)]


# --------------------------------------------------------------------------------------------------
# Errors


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(CorpusError, match="no such file") as info:
        iter_corpus(corpus_from_paths([missing]))  # raised at once, before iteration
    assert str(missing) in str(info.value)
    with pytest.raises(CorpusError, match="nope.txt"):
        iter_file(missing)


def test_glob_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"glob pattern matches no file") as info:
        resolve_files([str(tmp_path / "*.jsonl")])
    assert "*.jsonl" in str(info.value)


def test_directory_without_files(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    write_lines(tmp_path / "empty" / ".hidden", ["x"])
    with pytest.raises(CorpusError, match="directory contains no files") as info:
        resolve_files([str(tmp_path / "empty")])
    assert "empty" in str(info.value)


@pytest.mark.parametrize("content", ["", "\n\n  \n\t\n"])
def test_empty_corpus_is_an_error_at_the_end(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "blank.txt", content)
    stream = iter_corpus(corpus_from_paths([path]))  # nothing raised before iteration
    with pytest.raises(CorpusError, match="empty") as info:
        next(stream)
    assert "blank.txt" in str(info.value)


def test_empty_jsonl_field_hints_at_text_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": ""}])
    with pytest.raises(CorpusError, match="text_field"):
        read_all(path)


@pytest.mark.parametrize("compression", list(COMPRESSORS))
@settings(max_examples=20, deadline=None)
@given(
    lines=st.lists(
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=8),
        min_size=1,
        max_size=6,
    ),
    where=st.integers(min_value=0),
    bom=st.booleans(),
)
def test_invalid_utf8_names_file_and_byte_offset(
    compression: str, lines: list[str], where: int, bom: bool
) -> None:
    data = bytearray(b"\xef\xbb\xbf" if bom else b"")
    data += "".join(f"{line}\n" for line in lines).encode("utf-8")
    # Inject a lone continuation byte at a character boundary of one of the lines.
    line_index = where % len(lines)
    offset = len(data) - sum(len(f"{line}\n".encode()) for line in lines[line_index:])
    offset += len(lines[line_index][: where % (len(lines[line_index]) + 1)].encode("utf-8"))
    data[offset:offset] = b"\x80"
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / f"bad.txt{compression}", bytes(data))
        with pytest.raises(CorpusError) as info:
            list(iter_file(path))
        message = str(info.value)
        assert str(path) in message
        assert f"byte offset {offset} " in message
        assert f"(line {line_index + 1})" in message
        assert "--encoding-errors replace" in message
        assert "\n" not in message
        replaced = list(iter_file(path, encoding_errors="replace"))
        assert "\ufffd" in replaced[line_index]
        assert sum(doc.count("\ufffd") for doc in replaced) == 1


def test_invalid_utf8_offset_by_hand(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt.gz", b"hello\nworld\nab\xffcd\n")
    with pytest.raises(CorpusError, match=r"byte offset 14 of the decompressed stream \(line 3\)"):
        list(iter_file(path))
    assert read_all(path, encoding_errors="replace") == ["hello", "world", "ab\ufffdcd"]


def test_missing_jsonl_field_lists_keys(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "ok"}, {"content": "x", "id": 3}])
    with pytest.raises(CorpusError) as info:
        list(iter_file(path))
    message = str(info.value)
    assert "a.jsonl" in message and "line 2" in message and "'text'" in message
    assert "['content', 'id']" in message


def test_malformed_json_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl.bz2", '{"text": "ok"}\n\n{"text": "broken\n')
    with pytest.raises(CorpusError, match=r"malformed JSON on line 3") as info:
        read_all(path)
    assert "a.jsonl.bz2" in str(info.value)
    path = write(tmp_path / "list.jsonl", '["not", "an", "object"]\n')
    with pytest.raises(CorpusError, match=r"line 1 is a JSON list"):
        list(iter_file(path))
    path = write_jsonl(tmp_path / "num.jsonl", [{"text": 5}])
    with pytest.raises(CorpusError, match=r"'text' on line 1 is a JSON int"):
        list(iter_file(path))


def test_missing_parquet_column_lists_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "a.parquet", {"body": ["x"], "id": [1]})
    with pytest.raises(CorpusError) as info:
        list(iter_file(path))
    message = str(info.value)
    assert "a.parquet" in message and "'text'" in message and "['body', 'id']" in message
    with pytest.raises(CorpusError, match="expected a string column"):
        list(iter_file(path, text_field="id"))


def test_not_a_parquet_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = write(tmp_path / "a.parquet", "just text\n")
    with pytest.raises(CorpusError, match="not a readable parquet file"):
        list(iter_file(path))


def test_parquet_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "a.parquet", b"PAR1")
    other = write_lines(tmp_path / "b.txt", ["x"])
    for name in ["pyarrow", "pyarrow.parquet"]:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import pyarrow` raise ImportError
    with pytest.raises(CorpusError, match="needs pyarrow") as info:
        iter_corpus(corpus_from_paths([other, path]))  # before reading b.txt
    assert "a.parquet" in str(info.value) and "pip install" in str(info.value)
    with pytest.raises(CorpusError, match="needs pyarrow"):
        list(iter_file(path))


@pytest.mark.parametrize("compression", [".gz", ".xz", ".bz2", ".zst"])
def test_unreadable_compression(tmp_path: Path, compression: str) -> None:
    path = tmp_path / f"x.txt{compression}"
    path.write_bytes(b"this is plain text, not compressed\n" * 10)
    with pytest.raises(CorpusError) as info:
        list(iter_file(path))
    message = str(info.value)
    assert str(path) in message and "unreadable" in message and "corrupt" in message
    assert "\n" not in message


def test_truncated_compression(tmp_path: Path) -> None:
    path = tmp_path / "x.txt.xz"
    path.write_bytes(lzma.compress(b"line\n" * 10_000)[:-40])
    with pytest.raises(CorpusError, match="xz compression is unreadable"):
        list(iter_file(path))


def test_compressed_parquet_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "a.parquet.gz", b"whatever")
    with pytest.raises(CorpusError, match="compressed parquet"):
        list(iter_file(path))


def test_config_validation() -> None:
    source = CorpusSource(["a.txt"])
    for kwargs in [
        {"encoding_errors": "ignore"},
        {"temperature": 0},
        {"temperature": -1.0},
        {"temperature": float("inf")},
        {"max_bytes": 0},
        {"max_lines": -3},
        {"max_documents": 0},
        {"max_documents": 1.5},
        {"shuffle_buffer": 0},
        {"seed": -1},
    ]:
        with pytest.raises(ConfigError):
            CorpusConfig(sources=[source], **kwargs)
    with pytest.raises(ConfigError):
        CorpusConfig(sources=[])
    with pytest.raises(ConfigError):
        CorpusSource(paths=[])
    for weight in [0, -1.0, float("nan")]:
        with pytest.raises(ConfigError):
            CorpusSource(["a.txt"], weight=weight)
    with pytest.raises(ConfigError, match="some corpus sources have a weight"):
        CorpusConfig(sources=[CorpusSource(["a.txt"], weight=1.0), CorpusSource(["b.txt"])])
    with pytest.raises(ConfigError):
        iter_file(Path("a.txt"), encoding_errors="ignore")


def test_config_fields_carry_help() -> None:
    import dataclasses

    for cls in (CorpusSource, CorpusConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


# --------------------------------------------------------------------------------------------------
# Laziness


def test_reader_is_lazy(tmp_path: Path) -> None:
    # Several MB of incompressible lines followed by garbage: the first document comes at once,
    # the corruption surfaces only when the reader gets there.
    path = tmp_path / "huge.txt.gz"
    lines = [os.urandom(60).hex() for _ in range(40_000)]
    path.write_bytes(
        gzip.compress("".join(f"{line}\n" for line in lines).encode(), compresslevel=1) + b"garbage!"
    )
    assert path.stat().st_size > 2_000_000
    start = time.perf_counter()
    stream = iter_corpus(corpus_from_paths([path]))
    assert next(stream) == lines[0]
    assert time.perf_counter() - start < 0.5
    stream.close()
    assert read_all(path, max_documents=10) == lines[:10]
    with pytest.raises(CorpusError, match="gzip compression is unreadable"):
        read_all(path)


def test_later_bad_bytes_only_fail_when_reached(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"good\nalso good\nbad \xff here\n")
    assert read_all(path, max_documents=2) == ["good", "also good"]
    assert read_all(path, max_lines=2) == ["good", "also good"]
    with pytest.raises(CorpusError, match="byte offset 19"):
        read_all(path)


# --------------------------------------------------------------------------------------------------
# Limits


def test_max_documents(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.txt", [f"d{i}" for i in range(10)])
    assert read_all(path, max_documents=3) == ["d0", "d1", "d2"]
    assert read_all(path, max_documents=100) == [f"d{i}" for i in range(10)]


def test_max_bytes_never_exceeded(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.txt", ["aa", "ééé", "c"])  # 2, 6 and 1 UTF-8 bytes
    assert read_all(path, max_bytes=8) == ["aa", "ééé"]
    assert read_all(path, max_bytes=7) == ["aa"]  # stops at the document that does not fit
    assert read_all(path, max_bytes=2) == ["aa"]
    with pytest.raises(CorpusError, match=r"first has 2 bytes, over max_bytes=1"):
        read_all(path, max_bytes=1)


@settings(max_examples=30, deadline=None)
@given(docs=line_docs, max_bytes=st.integers(min_value=1, max_value=200))
def test_max_bytes_is_a_prefix_within_budget(docs: list[str], max_bytes: int) -> None:
    docs = [d for d in docs if d.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_lines(Path(tmp) / "a.txt", docs)
        try:
            got = read_all(path, max_bytes=max_bytes)
        except CorpusError:
            got = []
    total = sum(len(d.encode()) for d in got)
    assert got == docs[: len(got)] and total <= max_bytes
    if len(got) < len(docs):
        assert total + len(docs[len(got)].encode()) > max_bytes


def test_max_lines_counts_physical_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "a\n\n  \nb\nc\n")
    assert read_all(path, max_lines=1) == ["a"]
    assert read_all(path, max_lines=3) == ["a"]
    assert read_all(path, max_lines=4) == ["a", "b"]
    jsonl = write(tmp_path / "a.jsonl", '{"text": "a"}\n\n{"text": "b"}\n{"text": "c"}\n')
    assert read_all(jsonl, max_lines=3) == ["a", "b"]
    with pytest.raises(CorpusError, match="no document within max_lines=2"):
        read_all(write(tmp_path / "b.txt", "\n\nx\n"), max_lines=2)


def test_max_lines_spans_files(tmp_path: Path) -> None:
    write_lines(tmp_path / "d" / "1.txt", ["a", "b"])
    write_lines(tmp_path / "d" / "2.txt", ["c", "d"])
    assert read_all(tmp_path / "d", max_lines=3) == ["a", "b", "c"]


def test_skip_empty_off_keeps_blank_documents(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "a\n\n \nb\n")
    assert read_all(path, skip_empty=False) == ["a", "", " ", "b"]


# --------------------------------------------------------------------------------------------------
# Shuffling


@pytest.fixture
def numbered_dir(tmp_path: Path) -> Path:
    for f in range(5):
        write_lines(tmp_path / "d" / f"{f}.txt", [f"{f}-{i}" for i in range(200)])
    return tmp_path / "d"


def test_shuffle_is_deterministic_and_seed_dependent(numbered_dir: Path) -> None:
    plain = read_all(numbered_dir)
    first = read_all(numbered_dir, shuffle=True, shuffle_buffer=50, seed=1)
    again = read_all(numbered_dir, shuffle=True, shuffle_buffer=50, seed=1)
    other = read_all(numbered_dir, shuffle=True, shuffle_buffer=50, seed=2)
    assert first == again
    assert first != other
    assert first != plain
    assert collections.Counter(first) == collections.Counter(plain) == collections.Counter(other)


@settings(max_examples=25, deadline=None)
@given(
    docs=st.lists(st.sampled_from(["a", "b", "c", "dd", "e e"]), min_size=1, max_size=60),
    buffer=st.integers(min_value=1, max_value=80),
    seed=st.integers(min_value=0, max_value=2**32),
    max_documents=st.none() | st.integers(min_value=1, max_value=70),
)
def test_shuffle_keeps_the_multiset(
    docs: list[str], buffer: int, seed: int, max_documents: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_lines(Path(tmp) / "a.txt", docs)
        got = read_all(path, shuffle=True, shuffle_buffer=buffer, seed=seed, max_documents=max_documents)
    # Limits apply before the shuffle: the result is a permutation of the first documents.
    assert collections.Counter(got) == collections.Counter(docs[:max_documents])


def test_shuffle_permutes_file_order(numbered_dir: Path) -> None:
    # A buffer of one document keeps document order, so only the file order changes.
    orders = set()
    for seed in range(6):
        docs = read_all(numbered_dir, shuffle=True, shuffle_buffer=1, seed=seed)
        file_order = tuple(dict.fromkeys(doc.split("-")[0] for doc in docs))
        assert sorted(file_order) == ["0", "1", "2", "3", "4"]
        for f in file_order:  # each file is still read in order, in one piece
            assert [d for d in docs if d.startswith(f"{f}-")] == [f"{f}-{i}" for i in range(200)]
        orders.add(file_order)
    assert len(orders) > 1


def test_shuffle_moves_documents_locally(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.txt", [str(i) for i in range(5000)])
    got = [int(d) for d in read_all(path, shuffle=True, shuffle_buffer=100, seed=0)]
    # Buffer shuffle: an output position never precedes the document's input position by more than the buffer.
    assert all(doc <= pos + 100 for pos, doc in enumerate(got))
    assert sum(1 for pos, doc in enumerate(got) if doc != pos) > 4000


# --------------------------------------------------------------------------------------------------
# Mixing


def two_sources(tmp_path: Path, n_big: int, n_small: int, **kwargs) -> CorpusConfig:
    # Fixed-width documents make on-disk size proportional to the document count.
    big = write_lines(tmp_path / "big.txt", [f"B{i:06d}" for i in range(n_big)])
    small = write_lines(tmp_path / "small.txt", [f"S{i:06d}" for i in range(n_small)])
    weights = kwargs.pop("weights", (None, None))
    return CorpusConfig(
        sources=[CorpusSource([str(big)], weight=weights[0]), CorpusSource([str(small)], weight=weights[1])],
        **kwargs,
    )


def share_of_big(config: CorpusConfig) -> float:
    docs = list(iter_corpus(config))
    return sum(d.startswith("B") for d in docs) / len(docs)


def test_mixing_probabilities_follow_temperature(tmp_path: Path) -> None:
    config = two_sources(tmp_path, 9000, 1000)
    assert mixing_probabilities(config) == pytest.approx([0.9, 0.1])
    hot = two_sources(tmp_path, 9000, 1000, temperature=1 / 0.3)
    q = 0.9**0.3 / (0.9**0.3 + 0.1**0.3)
    assert mixing_probabilities(hot) == pytest.approx([q, 1 - q])
    assert mixing_probabilities(two_sources(tmp_path, 9000, 1000, temperature=1e6)) == pytest.approx(
        [0.5, 0.5], abs=1e-5
    )
    cold = two_sources(tmp_path, 9000, 1000, temperature=1e-3)
    assert mixing_probabilities(cold) == pytest.approx([1.0, 0.0])


def test_temperature_one_is_proportional(tmp_path: Path) -> None:
    share = share_of_big(two_sources(tmp_path, 9000, 1000, max_documents=4000, seed=3))
    assert share == pytest.approx(0.9, abs=0.025)


def test_large_temperature_is_near_uniform(tmp_path: Path) -> None:
    share = share_of_big(two_sources(tmp_path, 9000, 1000, max_documents=4000, temperature=100.0, seed=3))
    assert share == pytest.approx(0.5, abs=0.04)


def test_explicit_weights_are_honored(tmp_path: Path) -> None:
    config = two_sources(tmp_path, 9000, 1000, max_documents=4000, weights=(1.0, 3.0))
    assert mixing_probabilities(config) == pytest.approx([0.25, 0.75])
    assert share_of_big(config) == pytest.approx(0.25, abs=0.03)


def test_same_language_sources_are_smoothed_together(tmp_path: Path) -> None:
    for name, n in [("en1", 600), ("en2", 300), ("sw", 100)]:
        write_lines(tmp_path / f"{name}.txt", [f"{i:06d}" for i in range(n)])
    sources = [
        CorpusSource([str(tmp_path / "en1.txt")], lang="en"),
        CorpusSource([str(tmp_path / "en2.txt")], lang="en"),
        CorpusSource([str(tmp_path / "sw.txt")], lang="sw"),
    ]
    q_en, q_sw = 0.9**0.5, 0.1**0.5
    q_en, q_sw = q_en / (q_en + q_sw), q_sw / (q_en + q_sw)
    expected = [q_en * 2 / 3, q_en / 3, q_sw]
    assert mixing_probabilities(CorpusConfig(sources=sources, temperature=2.0)) == pytest.approx(expected)


def test_mixing_stops_when_every_source_ran_out_once(tmp_path: Path) -> None:
    config = two_sources(tmp_path, 300, 20, temperature=1000.0)
    docs = list(iter_corpus(config))
    big = [d for d in docs if d.startswith("B")]
    small = [d for d in docs if d.startswith("S")]
    # The big source runs out last, so it is read exactly once and in order; the small one is cycled.
    assert big == [f"B{i:06d}" for i in range(300)]
    assert len(small) > 100
    assert small[:40] == [f"S{i:06d}" for i in range(20)] * 2


def test_mixing_with_a_limit_stops_early(tmp_path: Path) -> None:
    config = two_sources(tmp_path, 300, 20, max_documents=50)
    assert len(list(iter_corpus(config))) == 50


def test_mixing_is_deterministic(tmp_path: Path) -> None:
    a = list(iter_corpus(two_sources(tmp_path, 500, 100, temperature=3.0, seed=7)))
    b = list(iter_corpus(two_sources(tmp_path, 500, 100, temperature=3.0, seed=7)))
    c = list(iter_corpus(two_sources(tmp_path, 500, 100, temperature=3.0, seed=8)))
    assert a == b and a != c
    d = list(
        iter_corpus(two_sources(tmp_path, 500, 100, temperature=3.0, seed=7, shuffle=True, shuffle_buffer=64))
    )
    e = list(
        iter_corpus(two_sources(tmp_path, 500, 100, temperature=3.0, seed=7, shuffle=True, shuffle_buffer=64))
    )
    assert d == e and d != a


def test_mixing_drops_sources_without_documents(tmp_path: Path) -> None:
    full = write_lines(tmp_path / "full.txt", ["x", "y"])
    blank = write(tmp_path / "blank.txt", "\n \n\n")
    empty = write(tmp_path / "empty.txt", "")
    config = CorpusConfig(
        sources=[CorpusSource([str(blank)]), CorpusSource([str(full)]), CorpusSource([str(empty)])]
    )
    assert list(iter_corpus(config)) == ["x", "y"]
    nothing = CorpusConfig(sources=[CorpusSource([str(blank)]), CorpusSource([str(empty)])])
    with pytest.raises(CorpusError, match="empty") as info:
        list(iter_corpus(nothing))
    assert "blank.txt" in str(info.value) and "empty.txt" in str(info.value)


def test_plain_text_files_fast_path(tmp_path):
    from vocabshift.corpus import plain_text_files

    a = tmp_path / "a.txt"
    a.write_text("uno\n\n  \ndos\ntres", encoding="utf-8")
    b = tmp_path / "b.txt"
    b.write_text("cuatro\n", encoding="utf-8")
    files = plain_text_files(corpus_from_paths([a, b]))
    assert files is not None and files.paths == [a, b]
    assert files.documents == len(list(iter_corpus(corpus_from_paths([a, b])))) == 4
    assert files.bytes == a.stat().st_size + b.stat().st_size and files.head == ["uno", "dos", "tres", "cuatro"]
    # anything the Rust trainers would read differently falls back to streaming
    crlf = tmp_path / "c.txt"
    crlf.write_bytes(b"uno\r\ndos\r\n")
    bom = tmp_path / "d.txt"
    bom.write_bytes(b"\xef\xbb\xbfuno\n")
    gz = tmp_path / "e.txt.gz"
    gz.write_bytes(gzip.compress(b"uno\n"))
    for cfg in (corpus_from_paths([crlf]), corpus_from_paths([bom]), corpus_from_paths([gz]),
                corpus_from_paths([a], max_documents=2), corpus_from_paths([a], shuffle=True),
                corpus_from_paths([a], encoding_errors="replace")):
        assert plain_text_files(cfg) is None


def test_plain_text_files_errors_match_the_reader(tmp_path):
    from vocabshift.corpus import plain_text_files

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hola\nmundo\nse\xf1or\n")
    with pytest.raises(CorpusError) as fast:
        plain_text_files(corpus_from_paths([bad]))
    with pytest.raises(CorpusError) as slow:
        list(iter_corpus(corpus_from_paths([bad])))
    assert str(fast.value) == str(slow.value)
    assert "byte offset 13" in str(fast.value) and "line 3" in str(fast.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(CorpusError, match="empty"):
        plain_text_files(corpus_from_paths([empty]))
