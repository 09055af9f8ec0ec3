"""Zero-shot single-object grounding probe: does a pretrained checkpoint's ITM head know which objects a
synthetic scene contains?

    python scripts/grounding_probe.py DATA_DIR CHECKPOINT [--scenes 500] [--seed 1234] [OVERRIDE ...]

Fresh scenes are drawn and rendered with the synthetic generator (``vlp.data.synthetic``, a fixed seed
of its own, JPEG-encoded as the data is, then the eval transform). Each scene gets four statements in the
partial-caption template "The picture contains a <colour> <shape>.":

- ``positive``: a colour+shape combination one of its objects has;
- ``colour``: a present object's shape with another colour, a combination no object has (hard: only the
  colour is wrong);
- ``shape``: a present object's colour with another shape, a combination no object has (hard: only the
  shape is wrong);
- ``random``: any colour+shape combination absent from the scene.

Each (scene, statement) is scored by the pretrained ITM head (match minus no-match logit) and, as a
reference, by the contrastive similarity of the unimodal embeddings (ITC). Printed per negative kind (and
for all negatives together): the ROC AUC of positives against those negatives over all scenes, a 95 %
bootstrap interval over scenes, and the paired win rate (the scene's positive outscores its own negative),
which is blind to how scores shift between scenes. The model is built as ``experiment=demo`` builds it
(OVERRIDE: more Hydra overrides for other configs) and loaded as ``model.init_from`` loads it.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image
from torchmetrics.functional.classification import binary_auroc

from vlp.build import build_run
from vlp.data.collate import tokenize
from vlp.data.datamodule import eval_image_settings, eval_image_transform
from vlp.data.synthetic import COLOURS, DEFAULT_IMAGE_SIZE, SHAPES, render_scene, sample_scene
from vlp.objectives.base import pool_fused
from vlp.train import CONFIG_DIR

KINDS = ("positive", "colour", "shape", "random")
TEMPLATE = "The picture contains {}."
JPEG_QUALITY = 92  # as vlp-synth writes its images


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def make_probes(scenes: int, seed: int) -> tuple[list[Image.Image], list[list[str]]]:
    """One image and one statement per kind (in KINDS order) for each of ``scenes`` scenes."""
    images, statements = [], []
    colours = list(COLOURS)
    for index in range(scenes):
        rng = np.random.default_rng([seed, index])
        objects = sample_scene(rng)
        image = render_scene(objects, DEFAULT_IMAGE_SIZE, rng)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        images.append(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        present = {(o.colour, o.shape) for o in objects}
        target = objects[int(rng.integers(len(objects)))]
        # every scene has at most 4 objects, so some other colour and some other shape are always absent
        other_colours = [c for c in colours if (c, target.shape) not in present]
        other_shapes = [s for s in SHAPES if (target.colour, s) not in present]
        absent = [(c, s) for c in colours for s in SHAPES if (c, s) not in present]
        pairs = [
            (target.colour, target.shape),
            (other_colours[int(rng.integers(len(other_colours)))], target.shape),
            (target.colour, other_shapes[int(rng.integers(len(other_shapes)))]),
            absent[int(rng.integers(len(absent)))],
        ]
        statements.append([TEMPLATE.format(_article(f"{c} {s}")).capitalize() for c, s in pairs])
    return images, statements


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC: P(a random positive outscores a random negative)."""
    scores = torch.from_numpy(np.concatenate([positive, negative]))
    labels = torch.cat(
        [torch.ones(len(positive), dtype=torch.long), torch.zeros(len(negative), dtype=torch.long)]
    )
    return float(binary_auroc(scores, labels))


def summarise(scores: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict[str, tuple[float, ...]]:
    """``scores [scenes, 4]`` (KINDS order) -> per negative kind and ``all``: (AUC, CI low, CI high,
    paired win rate)."""
    rng = np.random.default_rng(seed)
    boot = rng.integers(len(scores), size=(resamples, len(scores)))
    results = {}
    for name, columns in [("all", [1, 2, 3]), ("colour", [1]), ("shape", [2]), ("random", [3])]:

        def statistic(rows: np.ndarray, columns: list[int] = columns) -> float:
            return auc(scores[rows, 0], scores[rows][:, columns].ravel())

        draws = np.array([statistic(rows) for rows in boot])
        wins = (scores[:, [0]] > scores[:, columns]).mean()
        low, high = np.percentile(draws, [2.5, 97.5])
        results[name] = (statistic(np.arange(len(scores))), float(low), float(high), float(wins))
    return results


@torch.no_grad()
def score(
    data_dir: Path, checkpoint: Path, scenes: int, seed: int, overrides: list[str]
) -> dict[str, np.ndarray]:
    """``{"itm": [scenes, 4], "itc": [scenes, 4]}`` scores, columns in KINDS order."""
    base = ["experiment=demo", f"data_dir={data_dir}", "data.num_workers=0", f"model.init_from={checkpoint}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=base + overrides)
    with open_dict(cfg):
        cfg.evaluators = {}
    run = build_run(cfg)
    system, datamodule = run.system.eval(), run.datamodule
    model, itm = system.model, system.objectives["itm"]
    transform = eval_image_transform(**eval_image_settings(**datamodule.image_config))
    images, statements = make_probes(scenes, seed)
    kinds = len(KINDS)
    out: dict[str, list[torch.Tensor]] = {"itm": [], "itc": []}
    for start in range(0, scenes, 64):
        pixels = torch.stack([transform(image) for image in images[start : start + 64]])
        texts = [text for group in statements[start : start + 64] for text in group]
        tokens = tokenize(datamodule.tokenizer, texts, cfg.data.max_length)
        image = model.encode_image(pixels)
        text = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        image_tokens = image.tokens.repeat_interleave(kinds, dim=0)
        fused = model.fuse(text.tokens, text.attention_mask, image_tokens)
        logits = itm.head(pool_fused(fused, text.attention_mask, itm.pooling))
        out["itm"].append((logits[:, 1] - logits[:, 0]).reshape(-1, kinds))
        similarity = (image.embedding.repeat_interleave(kinds, dim=0) * text.embedding).sum(-1)
        out["itc"].append(similarity.reshape(-1, kinds))
    return {name: torch.cat(parts).float().numpy() for name, parts in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", type=Path, help="the demo's data dir (for the tokenizer)")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides, e.g. for another model config")
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1234, help="probe scenes; the demo's data uses seed 0")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scores = score(args.data_dir, args.checkpoint, args.scenes, args.seed, args.overrides)
    print(f"{args.scenes} scenes, seed {args.seed}: positives vs negatives of each kind")
    print(f"{'score':5s} {'negatives':9s} {'AUC':>6s} {'95% CI':>13s} {'paired':>7s}")
    for name, values in scores.items():
        for kind, (value, low, high, wins) in summarise(values).items():
            print(f"{name:5s} {kind:9s} {value:6.3f} [{low:.3f},{high:.3f}] {wins:7.3f}")


if __name__ == "__main__":
    main()
