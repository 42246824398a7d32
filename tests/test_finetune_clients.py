"""Ready to fine-tune: trl's ``SFTTrainer`` on what ``vocabshift export`` writes, as a user runs it.

A pico Llama with a tied head (as SmolLM2 and Llama-3.2 have) and a ChatML chat template is trained
with LoRA by ``vocabshift train`` and written by ``vocabshift export --save-adapter``. Then, with the
real trl, PEFT and 🤗 datasets:

* the exported model, given by path, is fine-tuned on a conversational dataset (``messages``): the
  chat template came through the export, so the user sets nothing;
* the run's adapter merged onto the run's model by PEFT (``merge_and_unload``) is fine-tuned on plain
  text with a new LoRA (``peft_config``), merged again;

two steps each; the result is saved, reloaded with ``AutoModelForCausalLM``/``AutoTokenizer``, and
must give finite logits and loss, with weights that moved and a head still tied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_train import one_thread as one_thread  # noqa: F401  (the fixture, autouse here too)
from tests.test_train import pico_model
from tests.test_train import spanish as spanish  # noqa: F401

pytestmark = pytest.mark.slow

# SmolLM2-Instruct's template (ChatML), as a source model ships it.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
TEXTS = ["Toda persona tiene derecho a la educación.", "Nadie estará sometido a esclavitud ni a servidumbre.",
         "Toda persona tiene derecho a la libertad de opinión y de expresión.", "La voluntad del pueblo es la base."]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, roberta_source, spanish) -> dict[str, Path]:  # noqa: F811
    """``vocabshift train`` (2 LoRA steps) + ``vocabshift export --save-adapter`` of a tied pico Llama."""
    from transformers import AutoTokenizer

    pytest.importorskip("trl")
    root = tmp_path_factory.mktemp("finetune")
    model = pico_model("llama_tied", roberta_source, root / "init")
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(model)
    _vocabshift("train", "--model", model, "--corpus", spanish, "--out", root / "run", "--max-steps", "2",
                "--seq-len", "32", "--batch-size", "4", "--lora-r", "4", "--eval-documents", "4",
                "--num-workers", "0", "--no-progress")
    _vocabshift("export", "--run", root / "run", "--out", root / "exported", "--save-adapter")
    return {"init": model, "exported": root / "exported"}


def _vocabshift(*args: Any) -> None:
    """Run the ``vocabshift`` command line in this process; it must succeed."""
    from cli.main import main

    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        assert not exit_.code, f"vocabshift {args[0]} exited with {exit_.code}"


def _sft_config(out: Path) -> Any:
    from trl import SFTConfig

    return SFTConfig(output_dir=str(out), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
                     max_length=64, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                     bf16=False, dataloader_num_workers=0, disable_tqdm=True, seed=0)


def _check_result(saved: Path, before: dict[str, torch.Tensor]) -> None:
    """Reload ``saved`` as a user would; finite loss and logits, changed weights, the tied head kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(saved).eval()
    tokenizer = AutoTokenizer.from_pretrained(saved)
    assert model.config.tie_word_embeddings and model.get_output_embeddings().weight is \
        model.get_input_embeddings().weight
    assert len(tokenizer) == model.get_input_embeddings().weight.shape[0]
    batch = tokenizer(TEXTS[:2], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    after = model.state_dict()
    changed = [name for name, tensor in before.items() if not torch.equal(after[name], tensor)]
    assert changed, "fine-tuning changed no weight"


def test_sft_on_the_exported_model_with_its_chat_template(exported, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    source = exported["exported"]
    tokenizer = AutoTokenizer.from_pretrained(source)
    assert tokenizer.chat_template == CHATML and tokenizer.pad_token is not None  # carried over by export
    before = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(source).state_dict().items()}
    messages = Dataset.from_list([{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                                  for q, a in zip(TEXTS, TEXTS[1:] + TEXTS[:1], strict=True)])
    trainer = SFTTrainer(model=str(source), args=_sft_config(tmp_path / "sft"), train_dataset=messages,
                         processing_class=tokenizer)
    first = tokenizer.decode(trainer.train_dataset[0]["input_ids"])
    assert first.startswith("<|im_start|>user\n") and "<|im_start|>assistant\n" in first  # the template applied
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    trainer.save_model(str(tmp_path / "tuned"))
    _check_result(tmp_path / "tuned", before)


def test_sft_with_lora_on_the_peft_merged_model(exported, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    # The run's adapter onto the run's model, merged by PEFT: the other way to the adapted model.
    base = AutoModelForCausalLM.from_pretrained(exported["init"])
    merged = PeftModel.from_pretrained(base, exported["exported"] / "adapter").merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(exported["exported"])
    tokenizer.save_pretrained(tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    before = {k: v.clone() for k, v in model.state_dict().items()}

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=_sft_config(tmp_path / "sft"),
                         train_dataset=Dataset.from_dict({"text": TEXTS}), processing_class=tokenizer,
                         peft_config=lora)
    trainer.train()
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in trainer.state.log_history if "loss" in e)
    tuned = trainer.model.merge_and_unload()
    tuned.save_pretrained(tmp_path / "tuned")
    tokenizer.save_pretrained(tmp_path / "tuned")
    _check_result(tmp_path / "tuned", before)
