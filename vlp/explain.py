"""What a decision rests on, as a grid over the image and as a heatmap PNG, two ways:

- **Grad-CAM** over the fusion's text-to-image cross-attention (ALBEF's way of showing where an ITM or VQA
  decision looks): one forward and backward pass; the map is over the vision tower's patches.
- **Occlusion** (captum.attr.Occlusion): a window of the image's own median colour slides over it and the
  map is how much the score drops where it covers. A forward pass per window position, and the map
  answers "what does the score need" directly. On the demo's tiny model, whose 3 self-attention layers mix
  the 16 patch tokens, its peak finds the object a caption names far more often than Grad-CAM's does
  (``vlp-explain --probes``), so use it when the patch-level attention is too diffuse to read.

For Grad-CAM, for each cross-attention layer, the attention weights ``A [B, heads, text, patches]`` are
recorded in the forward pass (``MultiHeadAttention.record_weights``) and differentiated against the score
being explained (the ITM match logit, or the logit of the VQA answer given). The map is
``A * max(dA, 0)``, averaged over heads, over the real text tokens and over the layers: the attention that
raised the score. Class tokens of the vision tower are dropped and the rest folded back into the patch
grid.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from vlp.data.synthetic import DEFAULT_IMAGE_SIZE, GRID, render_scene, sample_scene
from vlp.model.attention import MultiHeadAttention
from vlp.model.coattention import CoAttentionFusion
from vlp.model.fusion import CrossAttentionFusion

EXPLAIN_METHODS = ("gradcam", "occlusion")


class ExplainError(ValueError):
    """The model cannot be explained this way (no text-to-image cross-attention, a wrong option)."""


def text_to_image_attentions(fusion: nn.Module | None) -> list[MultiHeadAttention]:
    """The attention modules in which text tokens read the image, first layer first."""
    if isinstance(fusion, CrossAttentionFusion):  # ALBEF / BLIP
        return [layer.cross_attention for layer in fusion.layers]
    if isinstance(fusion, CoAttentionFusion):  # METER: the text stream's cross-attention
        return [layer.cross_attention for layer in fusion.text_layers]
    kind = "no fusion (a dual encoder)" if fusion is None else type(fusion).__name__
    raise ExplainError(
        "explanations read the text-to-image cross-attention of ALBEF- or METER-style fusion; "
        f"this model has {kind}"
    )


@contextmanager
def recording(attentions: list[MultiHeadAttention]) -> Iterator[None]:
    for attention in attentions:
        attention.record_weights, attention.recorded = True, []
    try:
        yield
    finally:
        for attention in attentions:
            attention.record_weights, attention.recorded = False, []


def grad_cam(
    score: Callable[[Tensor], Tensor],
    image_tokens: Tensor,
    text_mask: Tensor,
    attentions: list[MultiHeadAttention],
    layers: list[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """``score(image_tokens) -> [B]`` runs the fusion and the head on ``image_tokens [B, N, D]``.

    Returns the scores ``[B]`` and the relevance of each image token ``[B, N]`` (non-negative). The image
    tokens are cut from the graph of the towers so that the gradient reaches the attention weights even
    when the model's parameters are frozen, and nothing accumulates in ``.grad``."""
    tokens = image_tokens.detach().requires_grad_(True)
    with torch.enable_grad(), recording(attentions):
        scores = score(tokens)
        chosen = [attentions[i] for i in (layers if layers is not None else range(len(attentions)))]
        weights = []
        for attention in chosen:
            if len(attention.recorded) != 1:
                runs = len(attention.recorded)
                raise ExplainError(f"expected one fusion pass, the cross-attention ran {runs} times")
            weights.append(attention.recorded[0])
        grads = torch.autograd.grad(scores.sum(), weights)
    real = text_mask.to(weights[0].dtype)[:, :, None]  # [B, L, 1]
    maps = []
    for weight, grad in zip(weights, grads, strict=True):
        cam = (weight * grad.clamp(min=0)).mean(dim=1)  # [B, L, N]: heads averaged
        maps.append((cam * real).sum(dim=1) / real.sum(dim=1))  # real text tokens averaged
    return scores.detach(), torch.stack(maps).mean(dim=0).detach()


def patch_grid(relevance: Tensor, prefix_tokens: int | None = None) -> Tensor:
    """``[B, N]`` token relevance -> ``[B, g, g]`` over the patch grid, class (prefix) tokens dropped.
    ``prefix_tokens`` None: what is left over a square number of tokens (one class token for a ViT)."""
    tokens = relevance.shape[1]
    if prefix_tokens is None:
        prefix_tokens = tokens - math.isqrt(tokens) ** 2
    side = math.isqrt(tokens - prefix_tokens)
    if side * side != tokens - prefix_tokens:
        raise ExplainError(f"{tokens} image tokens less {prefix_tokens} class tokens are not a square grid")
    return relevance[:, prefix_tokens:].reshape(-1, side, side)


def peak_cell(grid: Tensor, cells: int) -> tuple[int, int]:
    """(row, col) of a ``cells x cells`` partition of the image that holds the centre of the grid's
    strongest patch: where the heatmap peaks, in the synthetic scenes' 3x3 layout."""
    side = grid.shape[-1]
    row, col = divmod(int(grid.flatten().argmax()), side)
    return int((row + 0.5) * cells / side), int((col + 0.5) * cells / side)


def heatmap_image(image: Image.Image, grid: Tensor, alpha: float = 0.5) -> Image.Image:
    """The image with the grid laid over it as a colour map (blue low, red high), same size as the image."""
    from matplotlib import colormaps  # imported here: only explanations draw

    values = grid.float()
    values = (values - values.min()) / (values.max() - values.min()).clamp(min=1e-12)
    small = Image.fromarray((values.cpu().numpy() * 255).astype(np.uint8))
    smooth = np.asarray(small.resize(image.size, Image.BILINEAR), dtype=np.float32) / 255.0
    colours = (colormaps["jet"](smooth)[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(colours), alpha)


def side_by_side(image: Image.Image, overlay: Image.Image, height: int = 256) -> Image.Image:
    """The image and its heatmap next to each other, scaled to ``height`` (small images stay sharp)."""
    width = round(image.width * height / image.height)
    both = Image.new("RGB", (2 * width + 4, height), (255, 255, 255))
    both.paste(image.convert("RGB").resize((width, height), Image.NEAREST), (0, 0))
    both.paste(overlay.resize((width, height), Image.BILINEAR), (width + 4, 0))
    return both


def occlusion_window(
    image_side: int, window: int | None = None, stride: int | None = None
) -> tuple[int, int]:
    """(window, stride) in pixels. By default the window is a quarter of the image side (large enough to
    hide an object of a scene, small enough to hide one at a time) and moves by half of itself."""
    window = window or max(1, image_side // 4)
    return window, stride or max(1, window // 2)


def occlusion(
    score: Callable[[Tensor], Tensor],
    pixel_values: Tensor,
    window: int,
    stride: int,
    max_batch: int = 64,
) -> tuple[Tensor, Tensor]:
    """``score(pixels) -> [k * B]`` scores ``k`` copies of the batch stacked along the first dimension
    (copy after copy, each a different window position: captum evaluates several in one call).

    Returns the scores ``[B]`` and the occlusion map ``[B, rows, cols]`` (non-negative): each cell is a
    ``stride x stride`` block of pixels, and its value the mean drop of the score over the windows that
    cover it, when they are filled with the image's per-channel median (a colour already in the image, so
    the patch reads as background and not as a new grey object). Rises of the score count as 0."""
    from captum.attr import Occlusion  # imported here: only explanations need it

    if not 0 < stride <= window <= min(pixel_values.shape[-2:]):
        raise ExplainError(f"occlusion needs 0 < stride <= window <= image side, got {window=} {stride=}")
    channels = pixel_values.shape[1]
    fill = pixel_values.flatten(2).median(dim=2).values[:, :, None, None].expand_as(pixel_values)
    with torch.no_grad():
        scores = score(pixel_values)
        drops = Occlusion(score).attribute(
            pixel_values,
            sliding_window_shapes=(channels, window, window),
            strides=(channels, stride, stride),
            baselines=fill.contiguous(),
            perturbations_per_eval=max(1, max_batch // len(pixel_values)),
        )
    # every pixel of a channel holds the same value (the window spans all channels): take one channel,
    # and average stride blocks, inside which the covering windows are the same
    pixels = drops[:, 0]
    rows, cols = (math.ceil(side / stride) for side in pixels.shape[-2:])
    grid = torch.nn.functional.adaptive_avg_pool2d(pixels[:, None], (rows, cols))[:, 0]
    return scores, grid.clamp(min=0)


# ------------------------------------------------------------------------- checking it on synthetic scenes


@dataclass(frozen=True)
class Probe:
    """A synthetic scene and a text whose answer rests on one object, and that object's grid cell."""

    image: Image.Image
    text: str
    cell: tuple[int, int]  # (row, col) in the scene's GRID x GRID layout
    num_objects: int


def object_probes(count: int, task: str, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0) -> list[Probe]:
    """Scenes of 2-4 objects (as vlp-synth draws them) with a text about one of them that nothing else in
    the scene matches: for ``itm`` the caption template "The picture contains a <colour> <shape>.", for
    ``vqa`` the question "What color is the <shape>?" about the only object of its shape."""
    if task not in ("itm", "vqa"):
        raise ValueError(f"task must be itm or vqa, got {task!r}")
    rng = np.random.default_rng([seed, 0x45585031])  # "EXP1": apart from vlp-synth's streams
    probes: list[Probe] = []
    while len(probes) < count:
        objects = sample_scene(rng)
        if len(objects) < 2:
            continue
        key = (lambda o: (o.colour, o.shape)) if task == "itm" else (lambda o: o.shape)
        seen = Counter(key(o) for o in objects)
        singled_out = [o for o in objects if seen[key(o)] == 1]
        if not singled_out:
            continue
        target = singled_out[int(rng.integers(len(singled_out)))]
        article = "an" if target.colour[0] in "aeiou" else "a"
        text = (
            f"The picture contains {article} {target.colour} {target.shape}."
            if task == "itm"
            else f"What color is the {target.shape}?"
        )
        image = render_scene(objects, image_size, rng)
        probes.append(Probe(image, text, (target.row, target.col), len(objects)))
    return probes


def hit_rate(grids: Tensor, probes: list[Probe]) -> dict[str, float]:
    """How often the heatmap's peak falls in the probe object's cell, and two chance levels: a peak in a
    uniformly random cell (1 / 9), and on a uniformly random object of the scene (mean of 1 / objects)."""
    hits = [peak_cell(grid, GRID) == probe.cell for grid, probe in zip(grids, probes, strict=True)]
    return {
        "hit_rate": float(np.mean(hits)),
        "chance_cell": 1.0 / (GRID * GRID),
        "chance_object": float(np.mean([1.0 / probe.num_objects for probe in probes])),
        "probes": float(len(probes)),
    }


# ------------------------------------------------------------------------------------------ vlp-explain


def main(argv: list[str] | None = None) -> int:
    """vlp-explain: heatmaps of what an exported model's ITM or VQA decision rests on.

    vlp-explain EXPORT --image photo.jpg --text "a dog on a sofa" [--task itm|vqa] [--out heat.png]
    vlp-explain EXPORT --probes 200 [--task itm|vqa] [--out DIR]   # hit rate on synthetic scenes
    either with [--method gradcam|occlusion] [--window PX --stride PX]
    """
    import argparse
    import json
    import sys
    from pathlib import Path

    from vlp.inference import MissingHead, load

    parser = argparse.ArgumentParser(prog="vlp-explain", description=main.__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="a folder written by vlp-export")
    parser.add_argument("--image", type=Path, help="the image to explain")
    parser.add_argument("--text", help="the caption (itm) or question (vqa)")
    parser.add_argument("--task", choices=("itm", "vqa"), default="itm")
    parser.add_argument(
        "--method",
        choices=EXPLAIN_METHODS,
        default="gradcam",
        help="Grad-CAM over the cross-attention, or occlusion (a forward pass per window)",
    )
    parser.add_argument("--layers", type=int, nargs="+", help="gradcam: fusion layers to average (all)")
    parser.add_argument("--window", type=int, help="occlusion: window side in input pixels (side / 4)")
    parser.add_argument("--stride", type=int, help="occlusion: step in input pixels (window / 2)")
    parser.add_argument("--probes", type=int, help="score N synthetic scenes instead (heatmap peak hit rate)")
    parser.add_argument(
        "--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="--probes: scene side in px"
    )
    parser.add_argument("--seed", type=int, default=0, help="--probes: which scenes")
    parser.add_argument("--out", type=Path, help="the PNG (default heatmap.png), or with --probes a folder")
    args = parser.parse_args(argv)
    if (args.probes is None) == (args.image is None or args.text is None):
        parser.error("give --image and --text, or --probes N")
    try:
        model = load(args.export)
        options = {"layers": args.layers, "method": args.method, "window": args.window, "stride": args.stride}
        if args.probes is not None:
            probes = object_probes(args.probes, args.task, args.image_size, args.seed)
            explanation = model.explain(
                [p.image for p in probes], [p.text for p in probes], args.task, **options
            )
            result = {"task": args.task, "method": args.method, **hit_rate(explanation.grids, probes)}
            out = args.out or Path("explain_probes")
            out.mkdir(parents=True, exist_ok=True)
            for index in range(min(8, len(probes))):  # a few examples to look at
                picture = side_by_side(probes[index].image, explanation.heatmap(index))
                picture.save(out / f"probe{index}_{probes[index].text.replace(' ', '_').strip('.?')}.png")
            (out / "hit_rate.json").write_text(json.dumps(result, indent=2) + "\n")
            print(json.dumps(result))
            return 0
        with Image.open(args.image) as image:
            explanation = model.explain([image.copy()], [args.text], args.task, **options)
        out = args.out or Path("heatmap.png")
        side_by_side(explanation.images[0], explanation.heatmap(0)).save(out)
        answer = f", answer {explanation.answers[0]!r}" if explanation.answers else ""
        score = float(explanation.scores[0])
        print(f"vlp-explain: {args.method} of the {args.task} score {score:.3f}{answer} -> {out}")
        return 0
    except (FileNotFoundError, MissingHead, ExplainError, OSError) as error:
        print(f"vlp-explain: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
