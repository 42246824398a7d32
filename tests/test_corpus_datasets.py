"""🤗 datasets as corpora: save_to_disk folders (Dataset, DatasetDict), arrow and parquet shards.

Every dataset here is written by the real ``datasets`` library; vocabshift reads it with pyarrow alone.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

try:
    import datasets
    import pyarrow as pa
except ImportError:  # a dev dependency: missing locally -> skipped, missing in CI -> error
    if os.environ.get("CI"):
        raise
    pytest.skip("datasets is not installed", allow_module_level=True)

from cli.main import main
from tests.conftest import udhr_lines
from vocabshift import corpus as corpus_module
from vocabshift.corpus import (
    CorpusConfig,
    CorpusSource,
    corpus_from_paths,
    is_datasets_folder,
    iter_corpus,
    mixing_probabilities,
    resolve_files,
    split_spec,
)
from vocabshift.errors import ConfigError, CorpusError, UnsafeOutputError

datasets.disable_progress_bars()


def save(path: Path, columns: dict[str, list], **kwargs) -> Path:
    datasets.Dataset.from_dict(columns).save_to_disk(str(path), **kwargs)
    return path


def save_dict(path: Path, splits: dict[str, dict[str, list]]) -> Path:
    datasets.DatasetDict({name: datasets.Dataset.from_dict(cols) for name, cols in splits.items()}).save_to_disk(
        str(path))
    return path


def read_all(paths, **kwargs) -> list[str]:
    return list(iter_corpus(corpus_from_paths(paths, **kwargs)))


def texts(n: int, tag: str = "doc") -> list[str]:
    return [f"{tag} {i} " + "word " * (i % 7) for i in range(n)]


# --------------------------------------------------------------------------------------------------
# save_to_disk folders


def test_dataset_folder_is_read_in_order_across_shards(tmp_path: Path) -> None:
    docs = texts(3000)
    folder = save(tmp_path / "ds", {"id": list(range(3000)), "text": docs}, num_shards=3)
    shards = sorted(folder.glob("data-*.arrow"))
    assert len(shards) == 3 and is_datasets_folder(folder)
    assert resolve_files([str(folder)]) == shards
    assert read_all(folder) == docs
    # datasets writes map() caches beside the data (cache-*.arrow): they are not data
    datasets.load_from_disk(str(folder)).map(lambda row: {"n": len(row["text"])})
    assert list(folder.glob("cache-*.arrow"))
    assert resolve_files([str(folder)]) == shards and read_all(folder) == docs


def test_nulls_and_blank_values_are_empty_documents(tmp_path: Path) -> None:
    folder = save(tmp_path / "ds", {"text": ["a", None, "", "  ", "b"]})
    assert read_all(folder) == ["a", "b"]
    assert read_all(folder, skip_empty=False) == ["a", "", "", "  ", "b"]


def test_dataset_dict_reads_train_unless_a_split_is_named(tmp_path: Path) -> None:
    folder = save_dict(tmp_path / "dd", {"train": {"text": ["t1", "t2"]}, "validation": {"text": ["v1"]},
                                         "test": {"text": ["x1"]}})
    assert is_datasets_folder(folder)
    assert read_all(folder) == ["t1", "t2"]
    assert read_all(f"{folder}:validation") == ["v1"]
    assert read_all(folder / "test") == ["x1"]  # the split's own folder is a Dataset folder
    assert split_spec(f"{folder}:test") == (folder, "test")
    assert split_spec(str(folder)) is None and split_spec(f"{tmp_path / 'nope'}:test") is None


def test_wrong_split_lists_the_splits(tmp_path: Path) -> None:
    folder = save_dict(tmp_path / "dd", {"validation": {"text": ["v"]}, "test": {"text": ["x"]}})
    with pytest.raises(CorpusError, match=r"no split 'train'; its splits: \['validation', 'test'\]") as info:
        iter_corpus(corpus_from_paths([folder]))  # raised at once, before iteration
    assert str(folder) in str(info.value) and f"{folder}:validation" in str(info.value)
    with pytest.raises(CorpusError, match=r"no split 'dev'; its splits: \['validation', 'test'\]"):
        resolve_files([f"{folder}:dev"])
    plain = save(tmp_path / "ds", {"text": ["a"]})
    with pytest.raises(CorpusError, match="Dataset folder, which has no split 'train'"):
        resolve_files([f"{plain}:train"])


def test_text_field_picks_the_column(tmp_path: Path) -> None:
    folder = save(tmp_path / "ds", {"text": ["t1", "t2"], "content": ["c1", "c2"]})
    assert read_all(folder, text_field="content") == ["c1", "c2"]
    source = CorpusSource(paths=[str(folder)], text_field="content")
    assert list(iter_corpus(CorpusConfig(sources=[source]))) == ["c1", "c2"]


def test_missing_column_names_the_columns(tmp_path: Path) -> None:
    folder = save(tmp_path / "ds", {"body": ["x"], "id": [1]})
    with pytest.raises(CorpusError) as info:
        read_all(folder)
    message = str(info.value)
    assert "data-00000-of-00001.arrow" in message and "no column 'text'" in message and "['body', 'id']" in message
    assert "--text-field" in message


def test_non_string_column_is_an_error(tmp_path: Path) -> None:
    folder = save(tmp_path / "ds", {"text": [1, 2]})
    with pytest.raises(CorpusError, match="column 'text' has type int64, expected a string column"):
        read_all(folder)
    words = save(tmp_path / "words", {"text": [["a", "b"]]})
    with pytest.raises(CorpusError, match="expected a string column"):
        read_all(words)


def test_binary_column_is_decoded_as_utf8(tmp_path: Path) -> None:
    folder = save(tmp_path / "ds", {"text": [b"caf\xc3\xa9", b"bad \xff"]})
    with pytest.raises(CorpusError, match=r"invalid UTF-8 at byte offset 4 of row 2 in column 'text'"):
        read_all(folder)
    assert read_all(folder, encoding_errors="replace") == ["café", "bad \ufffd"]


# --------------------------------------------------------------------------------------------------
# Loose shards: arrow (stream and file format) and parquet


def test_loose_arrow_shards_and_globs(tmp_path: Path) -> None:
    docs = texts(2500)
    saved = save(tmp_path / "saved", {"text": docs}, num_shards=2)
    loose = tmp_path / "shards"
    loose.mkdir()
    for shard in sorted(saved.glob("data-*.arrow")):
        shutil.copy(shard, loose / shard.name.replace("data", "part"))
    assert not is_datasets_folder(loose)
    assert read_all(loose) == docs
    assert read_all(str(loose / "*.arrow")) == docs
    assert read_all(loose / "part-00001-of-00002.arrow") == docs[1250:]


def test_arrow_file_format_is_read_too(tmp_path: Path) -> None:
    table = pa.table({"text": ["a", "b", None, "c"], "id": [1, 2, 3, 4]})
    path = tmp_path / "t.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=3)
    assert path.read_bytes()[:6] == b"ARROW1"
    assert read_all(path) == ["a", "b", "c"]


def test_parquet_written_by_datasets(tmp_path: Path) -> None:
    docs = texts(50)
    ds = datasets.Dataset.from_dict({"text": docs, "label": [i % 3 for i in range(50)]})
    ds.to_parquet(str(tmp_path / "a.parquet"))
    assert read_all(tmp_path / "a.parquet") == docs


def test_folder_of_hub_shards_reads_one_split(tmp_path: Path) -> None:
    """A hub download: README.md beside data/{split}-00000-of-0000N.parquet, as push_to_hub writes them."""
    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    (hub / "README.md").write_text("---\nlicense: cc0\n---\n# A dataset card, not text to train on\n")
    (hub / ".gitattributes").write_text("*.parquet filter=lfs\n")
    train = texts(30, "train")
    datasets.Dataset.from_dict({"text": train[:20]}).to_parquet(str(hub / "data" / "train-00000-of-00002.parquet"))
    datasets.Dataset.from_dict({"text": train[20:]}).to_parquet(str(hub / "data" / "train-00001-of-00002.parquet"))
    datasets.Dataset.from_dict({"text": ["held out"]}).to_parquet(str(hub / "data" / "test-00000-of-00001.parquet"))
    assert read_all(hub) == train  # not the card, not the test split
    assert read_all(f"{hub}:test") == ["held out"]
    with pytest.raises(CorpusError, match=r"no split 'validation' among its .arrow/.parquet shards; "
                                          r"its splits: \['test', 'train'\]"):
        resolve_files([f"{hub}:validation"])


def test_folder_of_shards_named_by_split_keywords(tmp_path: Path) -> None:
    folder = tmp_path / "kw"
    folder.mkdir()
    for name, docs in {"train.parquet": ["t"], "dev.parquet": ["d"], "eval-1.parquet": ["e"]}.items():
        datasets.Dataset.from_dict({"text": docs}).to_parquet(str(folder / name))
    assert read_all(folder) == ["t"]
    assert read_all(f"{folder}:validation") == read_all(f"{folder}:dev") == ["d"]  # datasets' own aliases
    assert read_all(f"{folder}:test") == ["e"]
    # shards without split names are all train
    other = tmp_path / "plain"
    other.mkdir()
    datasets.Dataset.from_dict({"text": ["a"]}).to_parquet(str(other / "part-0.parquet"))
    datasets.Dataset.from_dict({"text": ["b"]}).to_parquet(str(other / "part-1.parquet"))
    assert read_all(other) == read_all(f"{other}:train") == ["a", "b"]


def test_directory_of_several_datasets(tmp_path: Path) -> None:
    root = tmp_path / "corpora"
    save(root / "a", {"text": ["a1", "a2"]})
    save_dict(root / "b", {"train": {"text": ["b1"]}, "test": {"text": ["b-test"]}})
    assert read_all(root) == ["a1", "a2", "b1"]  # no state.json or dataset_info.json read as text


# --------------------------------------------------------------------------------------------------
# Limits, long documents, mixing, shuffling


def test_limits_apply_as_for_files(tmp_path: Path) -> None:
    docs = texts(100)
    folder = save(tmp_path / "ds", {"text": docs}, num_shards=4)
    assert read_all(folder, max_documents=30) == docs[:30]
    assert read_all(folder, max_lines=10) == docs[:10]
    budget = sum(len(d.encode()) for d in docs[:40])
    assert read_all(folder, max_bytes=budget) == docs[:40]
    assert read_all(folder, max_bytes=budget - 1) == docs[:39]


def test_long_documents_are_split(tmp_path: Path) -> None:
    long = "word " * 100
    folder = save(tmp_path / "ds", {"text": ["short", long]})
    pieces = read_all(folder, max_document_bytes=64)
    assert pieces[0] == "short" and len(pieces) > 2
    assert all(len(p.encode()) <= 64 for p in pieces) and "".join(pieces[1:]) == long
    # max_lines counts a row once, with all its pieces
    assert read_all(folder, max_document_bytes=64, max_lines=2) == pieces


def test_mixing_with_a_text_file_weighs_the_text_column(tmp_path: Path) -> None:
    docs = texts(400, "ds")
    # a wide column of vectors beside the text must not make the dataset look 50 times larger
    folder = save(tmp_path / "ds", {"text": docs, "embedding": [[0.5] * 64 for _ in docs]})
    txt = tmp_path / "plain.txt"
    plain = texts(400, "tx")
    txt.write_text("\n".join(plain) + "\n", encoding="utf-8")
    assert sum(f.stat().st_size for f in resolve_files([str(folder)])) > 20 * txt.stat().st_size
    config = CorpusConfig(sources=[CorpusSource([str(folder)]), CorpusSource([str(txt)])], temperature=1.0)
    p_ds, p_txt = mixing_probabilities(config)
    assert p_ds == pytest.approx(0.5, abs=0.05) and p_txt == pytest.approx(0.5, abs=0.05)
    stream = list(iter_corpus(config))
    assert set(docs) <= set(stream) and set(plain) <= set(stream)  # every source read through once
    assert stream == list(iter_corpus(config))  # seeded: the same stream again
    # and parquet the same way, from its footer
    datasets.Dataset.from_dict({"text": docs, "embedding": [[0.5] * 64 for _ in docs]}).to_parquet(
        str(tmp_path / "ds.parquet"))
    config = CorpusConfig(sources=[CorpusSource([str(tmp_path / "ds.parquet")]), CorpusSource([str(txt)])])
    assert mixing_probabilities(config)[0] == pytest.approx(0.5, abs=0.05)


def test_weighted_and_limited_mixture(tmp_path: Path) -> None:
    folder = save_dict(tmp_path / "dd", {"train": {"text": texts(50, "a")}, "test": {"text": texts(50, "b")}})
    config = CorpusConfig(sources=[CorpusSource([str(folder)], weight=1.0),
                                   CorpusSource([f"{folder}:test"], weight=3.0)], max_documents=200, seed=3)
    stream = list(iter_corpus(config))
    assert len(stream) == 200
    share = sum(d.startswith("b") for d in stream) / len(stream)
    assert 0.6 < share < 0.9


def test_shuffle_is_seeded_and_keeps_the_documents(tmp_path: Path) -> None:
    docs = texts(300)
    folder = save(tmp_path / "ds", {"text": docs}, num_shards=3)
    shuffled = read_all(folder, shuffle=True, shuffle_buffer=50, seed=1)
    assert shuffled != docs and sorted(shuffled) == sorted(docs)
    assert shuffled == read_all(folder, shuffle=True, shuffle_buffer=50, seed=1)


def test_held_out_split_comes_from_the_same_stream(tmp_path: Path) -> None:
    from vocabshift.train.data import _held_out_documents

    docs = texts(40)
    folder = save(tmp_path / "ds", {"text": docs})
    assert _held_out_documents(corpus_from_paths([folder]), 5) == docs[:5]


# --------------------------------------------------------------------------------------------------
# Lazy reading


def test_reading_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """max_documents=2 on a dataset of 8 shards of many batches opens one shard and reads one batch."""
    folder = save(tmp_path / "ds", {"text": texts(8000)}, num_shards=8)
    opened: list[str] = []
    batches: list[int] = []
    real_open, real_batches = corpus_module._open_arrow, corpus_module._arrow_batches

    def counting_open(path):
        opened.append(Path(path).name)
        return real_open(path)

    def counting_batches(source, path):
        schema, inner = real_batches(source, path)

        def counted():
            for batch in inner:
                batches.append(batch.num_rows)
                yield batch

        return schema, counted()

    monkeypatch.setattr(corpus_module, "_open_arrow", counting_open)
    monkeypatch.setattr(corpus_module, "_arrow_batches", counting_batches)
    stream = iter_corpus(corpus_from_paths([folder], max_documents=2))
    assert opened == []  # nothing is read before the first document is asked for
    assert list(stream) == texts(2)
    assert opened == ["data-00000-of-00008.arrow"] and len(batches) == 1
    # one source: sizes are not needed, so no batch header is read to weigh it
    opened.clear()
    stream = iter_corpus(corpus_from_paths([folder]))
    assert next(stream) == texts(1)[0] and opened == ["data-00000-of-00008.arrow"]
    stream.close()


# --------------------------------------------------------------------------------------------------
# Bad input


def test_empty_dataset_is_an_error(tmp_path: Path) -> None:
    empty = save(tmp_path / "empty", {"text": []})
    with pytest.raises(CorpusError, match="empty"):
        read_all(empty)
    nulls = save(tmp_path / "nulls", {"text": [None, " "]})
    with pytest.raises(CorpusError, match="the corpus is empty"):
        read_all(nulls)


def test_folder_that_is_neither(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("just text\n")
    assert read_all(notes) == ["just text"]  # a plain folder is read as before
    with pytest.raises(CorpusError, match="has no split 'train': it is neither a 🤗 datasets save_to_disk folder "
                                          "nor a folder of .arrow/.parquet shards"):
        resolve_files([f"{notes}:train"])
    with pytest.raises(CorpusError, match="no such file or directory"):
        resolve_files([f"{tmp_path / 'missing'}:train"])


def test_damaged_datasets_folders(tmp_path: Path) -> None:
    folder = save(tmp_path / "ds", {"text": ["a"]})
    (folder / "data-00000-of-00001.arrow").unlink()
    with pytest.raises(CorpusError, match="data file data-00000-of-00001.arrow listed in state.json is missing"):
        resolve_files([str(folder)])
    (folder / "state.json").write_text("{not json")
    with pytest.raises(CorpusError, match="state.json: cannot read this 🤗 datasets file"):
        resolve_files([str(folder)])
    (folder / "state.json").write_text(json.dumps({"_fingerprint": "x"}))
    with pytest.raises(CorpusError, match="lists no data files"):
        resolve_files([str(folder)])
    dd = save_dict(tmp_path / "dd", {"train": {"text": ["a"]}})
    shutil.rmtree(dd / "train")
    with pytest.raises(CorpusError, match="split 'train' is listed in dataset_dict.json but has no state.json"):
        resolve_files([str(dd)])


def test_damaged_arrow_files(tmp_path: Path) -> None:
    not_arrow = tmp_path / "a.arrow"
    not_arrow.write_text("just text\n")
    with pytest.raises(CorpusError, match="a.arrow: not a readable Arrow IPC file"):
        read_all(not_arrow)
    folder = save(tmp_path / "ds", {"text": texts(5000)})
    shard = folder / "data-00000-of-00001.arrow"
    truncated = tmp_path / "t.arrow"
    truncated.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CorpusError, match=r"t.arrow: cannot read record batch \d+ of the Arrow file"):
        read_all(truncated)
    # a flipped byte inside the text: refused as damaged (the text column is validated), never a crash
    corrupt = tmp_path / "c.arrow"
    raw = bytearray(shard.read_bytes())
    raw[raw.index(b"doc 4999 ") + 1] = 0xFF
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(CorpusError, match=r"c.arrow: cannot read record batch 4 of the Arrow file: .*UTF8"):
        read_all(corrupt)
    gz = tmp_path / "b.arrow.gz"
    gz.write_bytes(b"whatever")
    with pytest.raises(CorpusError, match="cannot read gzip-compressed arrow"):
        read_all(gz)


def test_arrow_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save(tmp_path / "ds", {"text": ["a"]})
    for name in ["pyarrow", "pyarrow.ipc"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(CorpusError, match="needs pyarrow") as info:
        iter_corpus(corpus_from_paths([folder]))
    assert "datasets library itself is not needed" in str(info.value)


# --------------------------------------------------------------------------------------------------
# The command line and adapt recipes


def run_cli(capsys, *args) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_tokenizer_train_and_stats_on_a_datasets_folder(capsys, tmp_path: Path, roberta_source: Path) -> None:
    spanish = udhr_lines("spa")
    folder = save_dict(tmp_path / "udhr", {"train": {"id": list(range(len(spanish))), "content": spanish},
                                           "test": {"id": [0], "content": ["Artículo de prueba."]}})
    out = tmp_path / "tok"
    code, stdout, stderr = run_cli(capsys, "tokenizer", "train", "--source", roberta_source, "--corpus", folder,
                                   "--text-field", "content", "--vocab-size", 600, "--out", out, "--no-progress")
    assert code == 0, stderr
    assert "600 tokens" in stdout
    assert json.loads((out / "vocabshift_tokenizer.json").read_text())["documents"] == len(spanish)

    code, stdout, stderr = run_cli(capsys, "tokenizer", "stats", "--tokenizer", out, "--corpus", f"{folder}:test",
                                   "--text-field", "content", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)[0]["documents"] == 1

    code, _, stderr = run_cli(capsys, "tokenizer", "stats", "--tokenizer", out, "--corpus", f"{folder}:dev",
                              "--text-field", "content")
    assert code == 1
    assert "no split 'dev'; its splits: ['train', 'test']" in stderr and "Traceback" not in stderr
    code, _, stderr = run_cli(capsys, "tokenizer", "stats", "--tokenizer", out, "--corpus", folder)
    assert code == 1 and "no column 'text'; columns: ['id', 'content']" in stderr


def test_recipes_check_splits_and_cache_by_the_data_files(tmp_path: Path) -> None:
    from vocabshift.outputs import input_paths, refuse_overlap
    from vocabshift.pipeline import _fingerprint, load_recipe

    folder = save_dict(tmp_path / "dd", {"train": {"text": ["a", "b"]}, "validation": {"text": ["v"]}})
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    recipe = {"source": str(source), "languages": [{"code": "spa", "corpus": [f"{folder}:validation"]}],
              "vocabulary": {"mode": "replace"}, "init": {"method": "fvt"}}
    config, _ = load_recipe(recipe)
    assert config.languages[0].corpus == [f"{folder}:validation"]
    recipe["languages"][0]["corpus"] = [f"{folder}:dev"]
    with pytest.raises(ConfigError, match=r"languages\[0\].corpus: .*no split 'dev'; its splits"):
        load_recipe(recipe)
    no_train = save_dict(tmp_path / "no_train", {"test": {"text": ["x"]}})
    recipe["languages"][0]["corpus"] = [str(no_train)]
    with pytest.raises(ConfigError, match=r"languages\[0\].corpus: .*no split 'train'; its splits: \['test'\]"):
        load_recipe(recipe)

    # stage keys: the files read, not the cache files datasets writes beside them, nor the other splits
    before = _fingerprint([str(folder)])
    assert [Path(f).name for f, *_ in before] == ["data-00000-of-00001.arrow"]
    datasets.load_from_disk(str(folder / "train")).map(lambda row: {"n": 1})
    save(tmp_path / "other", {"text": ["changed validation"]})
    shutil.rmtree(folder / "validation")
    shutil.copytree(tmp_path / "other", folder / "validation")
    assert _fingerprint([str(folder)]) == before
    assert _fingerprint([f"{folder}:validation"]) != before
    # FOLDER:SPLIT protects the folder as an input
    corpus = corpus_from_paths([f"{folder}:validation"])
    assert [p for _, p in input_paths(corpus)] == [folder.resolve()]
    with pytest.raises(UnsafeOutputError, match="lies inside the input"):
        refuse_overlap(folder / "out", input_paths(corpus))
