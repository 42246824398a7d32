"""``benchmarks/gpu_suite.sh --smoke`` works end to end on a CPU, so the GPU run is known to start right.

The smoke run takes every step of the GPU suite with tiny sizes (the gpu tests all skip here, which still
proves they collect; a pico Llama for the throughput run and the north star): about a minute on 2 cores,
plus about 30 s the first time for SmolLM2's tokenizer folder in ``benchmarks/.cache``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("gpu-tests", "cpt-throughput", "init-speed", "north-star-replace", "north-star-extend", "init-compute",
         "cpt-profile")


@pytest.mark.slow
def test_smoke_run_writes_a_summary_with_every_step(tmp_path):
    out = tmp_path / "suite"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--smoke", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    summary = (out / "summary.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in summary.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in STEPS}
    assert set(rows) == set(STEPS), summary
    for name, (status, _seconds, numbers) in rows.items():
        assert status in ("passed", "skipped"), (name, status, numbers)
    assert rows["init-speed"][0] == "skipped"  # its fastText inputs are not built in CI
    assert "0 passed, 0 failed" in rows["gpu-tests"][2] and "skipped" in rows["gpu-tests"][2]
    assert "tok/s" in rows["cpt-throughput"][2]
    for mode in ("replace", "extend"):
        assert "bible:" in rows[f"north-star-{mode}"][2] and "udhr:" in rows[f"north-star-{mode}"][2]
        assert (out / "north-star" / mode / "report" / "eval.json").is_file()
    assert (out / "gpu-tests.xml").is_file() and (out / "cpt_throughput.json").is_file()
    assert (out / "results.tar.gz").is_file()
    assert "## North star, replace" in summary and "## North star, extend" in summary
