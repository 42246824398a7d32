"""A ready lm-evaluation-harness task over the documents ``vocabshift eval`` scored (``--lm-eval-task DIR``).

For each named corpus, ``DIR/<name>.jsonl`` holds exactly the documents vocabshift scored, one
``{"text": ...}`` per line, and ``DIR/vocabshift_<name>.yaml`` an lm-eval task over that file, shaped
like lm-eval's own ``wikitext`` task (``lm_eval/tasks/wikitext/wikitext.yaml``): ``output_type:
loglikelihood_rolling``, ``doc_to_text: ""``, the document as ``doc_to_target``, and the metrics
``word_perplexity``, ``byte_perplexity`` and ``bits_per_byte``. The data is read by the Hugging Face
``json`` builder from the absolute path of the JSONL, so the task runs offline::

    lm_eval --model hf --model_args pretrained=MODEL,add_bos_token=False,max_length=WINDOW \\
            --include_path DIR --tasks vocabshift_heldout

lm-eval's default process_results counts words (``re.split(r"\\s+", doc)``) and UTF-8 bytes of the
target as vocabshift does, so its ``bits_per_byte`` is vocabshift's (docs/eval.md says which
``--model_args`` matter).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from vocabshift.outputs import atomic_output_dir

TASK_PREFIX = "vocabshift_"
README = "README.md"


def task_names(names: list[str]) -> dict[str, str]:
    """A file and task stem per corpus name: ``[A-Za-z0-9_]`` only, distinct (``_2`` appended on a clash)."""
    out: dict[str, str] = {}
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower() or "corpus"
        candidate, n = stem, 1
        while candidate in out.values():
            n += 1
            candidate = f"{stem}_{n}"
        out[name] = candidate
    return out


def task_config(task: str, data_file: Path) -> dict[str, object]:
    """The lm-eval task YAML of one corpus, as a mapping (keys as in lm-eval's wikitext task)."""
    return {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "output_type": "loglikelihood_rolling",
        "test_split": "test",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"}, {"metric": "bits_per_byte"}],
        "metadata": {"version": 1.0},
    }


def write_lm_eval_task(out_dir: str | Path, corpora: dict[str, list[str]], *, force: bool = False) -> Path:
    """Write the JSONL and task YAML of every corpus (name -> documents) into ``out_dir``, atomically;
    an existing ``out_dir`` is refused unless ``force`` (then replaced whole). Returns ``out_dir``."""
    out = Path(out_dir).expanduser().absolute()
    stems = task_names(list(corpora))
    with atomic_output_dir(out, force) as tmp:
        lines = ["# lm-evaluation-harness tasks written by `vocabshift eval --lm-eval-task`", "",
                 "The documents vocabshift scored, one task per corpus:", ""]
        for name, documents in corpora.items():
            stem = stems[name]
            data_file = out / f"{stem}.jsonl"  # where it will be once the directory is in place
            with open(tmp / data_file.name, "w", encoding="utf-8") as f:
                for doc in documents:
                    f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
            text = yaml.safe_dump(task_config(TASK_PREFIX + stem, data_file), sort_keys=False, allow_unicode=True)
            (tmp / f"{TASK_PREFIX}{stem}.yaml").write_text(f"# corpus {name!r}: {len(documents)} documents\n{text}",
                                                           encoding="utf-8")
            lines.append(f"- `{TASK_PREFIX}{stem}`: corpus {name} ({len(documents):,} documents)")
        tasks = ",".join(TASK_PREFIX + stems[n] for n in corpora)
        lines += ["", "```bash",
                  f"lm_eval --model hf --model_args pretrained=MODEL,add_bos_token=False,max_length=WINDOW "
                  f"--include_path {out} --tasks {tasks}", "```", "",
                  "WINDOW: vocabshift's window (eval.json: lm.new.window). See vocabshift docs/eval.md.", ""]
        (tmp / README).write_text("\n".join(lines), encoding="utf-8")
    return out
