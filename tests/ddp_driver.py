"""Run ``vocabshift.train.loop.train`` under torchrun and record what each rank saw and ended with.

Used by ``tests/test_distributed.py`` (not a test module itself): ``torchrun --nproc-per-node 2
tests/ddp_driver.py SETTINGS.json``. Each rank writes ``rank<R>.json`` (a fingerprint of every batch it
trained on) and ``rank<R>.safetensors`` (its trainable parameters after the last step) into the
settings' ``dump`` folder, so the test can check that ranks read different data and ended identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vocabshift.corpus import corpus_from_paths  # noqa: E402
from vocabshift.train import data as data_module  # noqa: E402
from vocabshift.train.config import LoraSettings, TrainConfig  # noqa: E402
from vocabshift.train.data_config import DataConfig  # noqa: E402
from vocabshift.train.loop import train  # noqa: E402


def main(settings_path: str) -> None:
    settings = json.loads(Path(settings_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    seen: list[str] = []
    original = data_module.PackedStream._collate

    def recording_collate(self, blocks, first):  # type: ignore[no-untyped-def]
        batch = original(self, blocks, first)
        seen.append(hashlib.sha256(batch["input_ids"].numpy().tobytes()).hexdigest()[:16])
        return batch

    data_module.PackedStream._collate = recording_collate
    config = TrainConfig(model=settings["model"], corpus=corpus_from_paths([settings["corpus"]]), out=settings["out"],
                         data=DataConfig(**settings["data"]), lora=LoraSettings(**settings["lora"]),
                         **settings["train"])
    stop_at = settings.get("stop_at")
    result = train(config, callbacks=[lambda info: stop_at is not None and info.step == stop_at])
    dump = Path(settings["dump"])
    dump.mkdir(parents=True, exist_ok=True)
    trainable = {}
    for n, p in result.model.named_parameters():
        if p.requires_grad:
            value = p.detach()
            if hasattr(value, "full_tensor"):  # FSDP2 shards parameters as DTensors
                value = value.full_tensor()
            trainable[n] = value.cpu().contiguous().clone()
    save_file(trainable, str(dump / f"rank{rank}.safetensors"))
    from accelerate.state import AcceleratorState

    kind = str(AcceleratorState().distributed_type).rsplit(".", 1)[-1]
    (dump / f"rank{rank}.json").write_text(json.dumps({"batches": seen, "step": result.step, "status": result.status,
                                                       "world": int(os.environ.get("WORLD_SIZE", "1")),
                                                       "distributed_type": kind}))


if __name__ == "__main__":
    main(sys.argv[1])
