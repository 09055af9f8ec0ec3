"""Try vlp-train on bad configs and tabulate what each gets: the last line it printed and how long it took.

    python scripts/bad_configs.py DATA_DIR [--out bad_configs.md]

DATA_DIR holds the synthetic benchmark (``make demo`` prepares it under ``data/``). Every run uses a
fresh temporary run folder; none of them should get as far as reading data or building a model.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BAD_OVERRIDES = [
    "trainer.max_epoch=1",  # a typo in a key
    "data.batch_size=0",
    "data.batch_size=eight",
    "trainer.precision=fp8",
    "system.optimizer.lr=-0.001",
    "trainer.accumulate_grad_batches=0",
    "data_dir=/nonexistent",
    "++data.val_split=valid",
    "objectives=[itc,vqa]",
    "evaluators=[nlvr2]",
    "model=clip_tiny",
    "model=vilt_tiny",
    "model.vision.image_size=70",
    "model.init_from=/no/such.ckpt",
    "monitor=val/vqa/overall",
    "data=synth_retrieval",
    "callbacks.step_checkpoint.every_n_train_steps=0",
    "model=no_such_model",
    "resume=true ckpt_path=/etc/hostname",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    vlp_train = str(Path(sys.executable).with_name("vlp-train"))
    lines = ["| override | exit | what vlp-train says (last line) | seconds |", "|---|---|---|---|"]
    for override in BAD_OVERRIDES:
        with tempfile.TemporaryDirectory() as run_dir:
            command = [vlp_train, f"data_dir={args.data_dir}", f"hydra.run.dir={run_dir}", *override.split()]
            started = time.monotonic()
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            seconds = time.monotonic() - started
        said = [
            line for line in result.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line
        ]
        last = said[-1].replace("|", "\\|") if said else "(nothing)"
        lines.append(f"| `{override}` | {result.returncode} | {last} | {seconds:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
