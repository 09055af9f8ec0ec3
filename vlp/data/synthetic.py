"""vlp-synth: a small, learnable vision-language benchmark written in the official file formats.

Each scene is a dark, slightly noisy canvas with 1-4 coloured shapes placed on a 3x3 grid. Captions
name every object (colour, shape, sometimes size), their count, and one spatial relation, in several
templates. They are written as a COCO Karpathy ``dataset_coco.json`` plus JPEG files, so that the demo
and the tests go through exactly the converter that real COCO goes through.

Everything is a pure function of ``(seed, image index)``, so the output is deterministic.

The same scenes are also written as VQA v2 and NLVR2 (``vlp.data.synthetic_tasks``); ``vlp-synth``
writes all three unless ``--tasks`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = ("small", "large")
GRID = 3
# 72 px: 24 px cells, so a ViT with 24 px patches (the demo's vit_tiny) has one patch per cell and sees each
# object whole. With 16 px patches on 64 px scenes the cells straddle patches, and the tiny tower learned
# shape far slower (supervised, 600 steps: 63 % against 99.8 % per-shape accuracy; see
# scripts/patch_grid_probe.py).
DEFAULT_IMAGE_SIZE = 72
CELL_NAMES = {  # (row, col) -> phrase
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "centre", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}  # fmt: skip
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
IMAGE_FOLDER = "images"  # plays the role of COCO's "train2014"/"val2014" filepath
TASKS = ("captions", "vqa", "nlvr2")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    row: int
    col: int

    def phrase(self, with_size: bool) -> str:
        words = ([self.size] if with_size else []) + [self.colour, self.shape]
        return " ".join(words)


def _uniform(values: tuple[str, ...], rng: np.random.Generator) -> str:
    """``str(rng.choice(values))`` and the same draw from the stream, without building an array each time:
    the NLVR2 generator rejection-samples thousands of scenes, and this was most of its time."""
    return values[int(rng.integers(len(values)))]


_COLOUR_NAMES = tuple(COLOURS)


def sample_scene(rng: np.random.Generator) -> list[SceneObject]:
    """1-4 objects on distinct grid cells; all attributes uniform."""
    count = int(rng.integers(1, 5))
    cells = rng.choice(GRID * GRID, size=count, replace=False)
    return [
        SceneObject(
            shape=_uniform(SHAPES, rng),
            colour=_uniform(_COLOUR_NAMES, rng),
            size=_uniform(SIZES, rng),
            row=int(cell) // GRID,
            col=int(cell) % GRID,
        )
        for cell in cells
    ]


def render_scene(objects: list[SceneObject], image_size: int, rng: np.random.Generator) -> Image.Image:
    background = rng.integers(25, 60)
    canvas = np.full((image_size, image_size, 3), background, dtype=np.float32)
    canvas += rng.normal(0.0, 8.0, size=canvas.shape)  # mild noise so that pixels are not trivially clean
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    cell = image_size / GRID
    for obj in objects:
        cx = (obj.col + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        cy = (obj.row + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        radius = cell * (0.24 if obj.size == "small" else 0.42)
        jitter = rng.integers(-15, 16, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[obj.colour], jitter, strict=True))
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        elif obj.shape == "triangle":
            draw.polygon(
                [(cx, cy - radius), (cx + radius, cy + radius), (cx - radius, cy + radius)], fill=fill
            )
        else:  # diamond
            draw.polygon(
                [(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)], fill=fill
            )
    return image


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _grouped_phrases(objects: list[SceneObject]) -> list[str]:
    """'two red circles and a blue square': objects of the same colour and shape are counted."""
    groups: dict[tuple[str, str], int] = {}
    for obj in objects:
        groups[(obj.colour, obj.shape)] = groups.get((obj.colour, obj.shape), 0) + 1
    phrases = []
    for (colour, shape), n in groups.items():
        phrases.append(
            _with_article(f"{colour} {shape}") if n == 1 else f"{NUMBER_WORDS[n]} {colour} {shape}s"
        )
    return phrases


def _relation(a: SceneObject, b: SceneObject) -> str:
    if a.col != b.col:
        where = "to the left of" if a.col < b.col else "to the right of"
    else:
        where = "above" if a.row < b.row else "below"
    return f"{_with_article(a.phrase(False))} is {where} {_with_article(b.phrase(False))}"


def make_captions(objects: list[SceneObject], n_captions: int, rng: np.random.Generator) -> list[str]:
    """Several templated captions; raw text keeps case and punctuation. All but one name every object; the
    last template names a single object, partially ("contains a circle"), as NLVR2 statements and VQA
    existence questions do, so that pretraining also grounds words that describe part of a scene."""
    order = list(rng.permutation(len(objects)))
    shuffled = [objects[i] for i in order]
    listing = _join([_with_article(o.phrase(False)) for o in shuffled])
    sized = _join([_with_article(o.phrase(True)) for o in shuffled])
    grouped = _join(_grouped_phrases(shuffled))
    n = len(objects)
    count = f"{NUMBER_WORDS[n]} object" + ("s" if n > 1 else "")
    if n > 1:
        relation = _relation(shuffled[0], shuffled[1])
        located = f"{relation}, with {count} in total"
    else:
        only = shuffled[0]
        relation = f"{_with_article(only.phrase(False))} in the {CELL_NAMES[(only.row, only.col)]}"
        located = f"{relation} of the picture"
    named = shuffled[-1]
    partial = named.shape if rng.random() < 0.5 else named.phrase(False)
    templates = [
        f"{listing}.",
        f"There {'are' if n > 1 else 'is'} {count}: {grouped}.",
        f"{sized} on a dark background.",
        f"{located}.",
        f"A picture of {grouped}; {relation}.",
        f"An image showing {sized}.",
        f"The picture contains {_with_article(partial)}.",
    ]
    chosen = rng.choice(len(templates), size=n_captions, replace=False)
    captions = [templates[i] for i in sorted(chosen)]
    return [c[0].upper() + c[1:] for c in captions]


def caption_tokens(raw: str) -> list[str]:
    """Karpathy-style tokens: lower case, punctuation removed."""
    return raw.lower().translate(str.maketrans("", "", string.punctuation)).split()


def generate_captions_benchmark(
    out: Path,
    n_train: int,
    n_val: int,
    n_test: int,
    image_size: int,
    seed: int,
    restval_fraction: float = 0.1,
) -> Path:
    """Write ``out/images/*.jpg`` and ``out/dataset_coco.json``; returns the json path."""
    image_dir = out / IMAGE_FOLDER
    image_dir.mkdir(parents=True, exist_ok=True)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    images = []
    sentence_id = 0
    for index, split in enumerate(splits):
        rng = np.random.default_rng([seed, index])
        objects = sample_scene(rng)
        # Real Karpathy files hold 5 captions per image, but some images have more: never assume 5.
        n_captions = int(rng.choice([4, 5, 5, 5, 5, 6]))
        captions = make_captions(objects, n_captions, rng)
        if split == "train" and rng.random() < restval_fraction:
            split = "restval"
        filename = f"synth_{index:012d}.jpg"
        render_scene(objects, image_size, rng).save(image_dir / filename, quality=92)
        sentences = []
        for raw in captions:
            sentences.append(
                {"raw": raw, "tokens": caption_tokens(raw), "imgid": index, "sentid": sentence_id}
            )
            sentence_id += 1
        images.append(
            {
                "filepath": IMAGE_FOLDER,
                "filename": filename,
                "imgid": index,
                "split": split,
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
                "cocoid": index,
            }
        )
    json_path = out / "dataset_coco.json"
    json_path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return json_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlp-synth", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=TASKS,
        default=list(TASKS),
        help="captions at OUT (images/ + dataset_coco.json), VQA v2 under OUT/vqa, NLVR2 under OUT/nlvr2",
    )
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-val", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument(
        "--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="scene side in px (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.image_size < 24:
        parser.error(f"--image-size {args.image_size} is too small to draw shapes; use 24 or more")
    total = args.n_train + args.n_val + args.n_test
    if "captions" in args.tasks:
        path = generate_captions_benchmark(
            args.out, args.n_train, args.n_val, args.n_test, args.image_size, args.seed
        )
        print(f"vlp-synth: wrote {total} images and {path}")
    # Imported here: synthetic_tasks imports this module for the scene sampler and renderer.
    from vlp.data.synthetic_tasks import generate_nlvr2_benchmark, generate_vqa_benchmark

    if "vqa" in args.tasks:
        generate_vqa_benchmark(
            args.out / "vqa", args.n_train, args.n_val, args.n_test, args.image_size, args.seed
        )
        print(f"vlp-synth: wrote {total} VQA v2 images and their questions under {args.out / 'vqa'}")
    if "nlvr2" in args.tasks:
        pairs = (args.n_train // 2, args.n_val // 2, args.n_test // 2)
        generate_nlvr2_benchmark(args.out / "nlvr2", *pairs, args.image_size, args.seed)
        print(f"vlp-synth: wrote {sum(pairs)} NLVR2 image pairs under {args.out / 'nlvr2'}")


if __name__ == "__main__":
    main()
