"""How fast does the demo's tiny ViT learn the synthetic scenes' shapes, for a given scene and patch size?

Trains the tower of ``conf/model/vision/vit_tiny.yaml`` (3 layers, width 128) with a linear head on its
pooled state to say which of the four shapes a fresh synthetic scene contains (one logit per shape), once
per geometry on the command line, ``SIZEpPATCH`` (e.g. ``72p24``: 72 px scenes in 24 px patches), and
prints held-out per-shape accuracy as training goes. Same seed, scenes, optimiser and steps for every
geometry, so the rows compare geometries and nothing else.

Why: the demo's pretraining grounds colour long before shape. Told the answer directly, the tower learns
shape within the demo's ~600 steps only when its patch grid is the scenes' 3x3 object grid (one patch
per object: 48p16, 60p20, 72p24, 96p32), not when cells straddle patches (64p16, 80p20).

    python scripts/patch_grid_probe.py 64p16 72p24 80p20
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from vlp.data.synthetic import SHAPES, render_scene, sample_scene
from vlp.model.vision import TimmVisionEncoder
from vlp.train import CONFIG_DIR


def scenes(n: int, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images normalised to [-1, 1] (the demo's mean and std of 0.5) and which shapes each one contains."""
    images, present = [], []
    for _ in range(n):
        objects = sample_scene(rng)
        pixels = np.asarray(render_scene(objects, size, rng), dtype=np.float32) / 127.5 - 1.0
        images.append(pixels.transpose(2, 0, 1))
        present.append([float(any(o.shape == shape for o in objects)) for shape in SHAPES])
    return torch.from_numpy(np.stack(images)), torch.tensor(present)


def probe(geometry: str, args: argparse.Namespace) -> None:
    size, patch = (int(part) for part in geometry.split("p"))
    rng = np.random.default_rng(0)
    (train_x, train_y), (test_x, test_y) = scenes(args.train, size, rng), scenes(args.test, size, rng)
    demo = OmegaConf.load(f"{CONFIG_DIR}/model/vision/vit_tiny.yaml")
    torch.manual_seed(0)
    tower = TimmVisionEncoder(
        demo.name, image_size=size, model_kwargs={**demo.model_kwargs, "patch_size": patch}
    )
    head = nn.Linear(tower.width, len(SHAPES))
    parameters = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.02)  # the demo's rate
    batches = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    absent = 100 * (1 - test_y).mean().item()
    print(f"{geometry}: answering 'absent' for every shape scores {absent:.1f} % on the held-out scenes")
    for step in range(1, args.steps + 1):
        rows = torch.randint(len(train_x), (args.batch_size,), generator=batches)
        loss = nn.functional.binary_cross_entropy_with_logits(head(tower(train_x[rows])[1]), train_y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 4) == 0 or step == args.steps:
            with torch.no_grad():
                accuracy = ((head(tower(test_x)[1]) > 0).float() == test_y).float().mean().item()
            print(f"{geometry:>6}  step {step:4d}  train loss {loss.item():.3f}  "
                  f"held-out accuracy {100 * accuracy:5.1f} %  ({time.perf_counter() - started:.0f} s)",
                  flush=True)  # fmt: skip


def geometry(text: str) -> str:
    if not re.fullmatch(r"\d+p\d+", text) or int(text.split("p")[0]) % int(text.split("p")[1]):
        raise argparse.ArgumentTypeError(f"{text!r}: want SIZEpPATCH, SIZE a multiple of PATCH, e.g. 72p24")
    return text


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("geometries", nargs="+", type=geometry, help="SIZEpPATCH, e.g. 64p16 72p24")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train", type=int, default=4000, help="training scenes (demo: 4000)")
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args(argv)
    for name in args.geometries:
        probe(name, args)


if __name__ == "__main__":
    main()
