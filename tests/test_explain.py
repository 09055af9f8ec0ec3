"""Grad-CAM over the fusion's cross-attention (vlp.explain) and training curves (vlp-plot)."""

import csv
import json

import pytest
import torch
from PIL import Image

from tests.test_export import build_checkpoint, caption_image_files, open_images
from vlp.explain import (
    ExplainError,
    grad_cam,
    heatmap_image,
    occlusion,
    occlusion_window,
    patch_grid,
    peak_cell,
    text_to_image_attentions,
)
from vlp.model.fusion import CrossAttentionFusion
from vlp.plot import main as vlp_plot


def _fusion_and_inputs():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(text_width=16, image_width=24, num_layers=2, num_heads=2).eval()
    head = torch.nn.Linear(16, 1)
    text = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    image = torch.randn(2, 10, 24)  # one class token + a 3x3 grid
    return fusion, head, text, mask, image


def test_recording_the_attention_weights_does_not_change_what_the_fusion_computes():
    fusion, head, text, mask, image = _fusion_and_inputs()
    plain = fusion(text, mask, image).tokens
    attentions = text_to_image_attentions(fusion)
    for attention in attentions:
        attention.record_weights = True
    recorded = fusion(text, mask, image).tokens
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    weights = attentions[0].recorded[0]
    assert weights.shape == (2, 2, 5, 10)  # [B, heads, text, image tokens]
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 5))


def test_grad_cam_scores_every_image_token_from_the_real_text_tokens_only():
    fusion, head, text, mask, image = _fusion_and_inputs()
    attentions = text_to_image_attentions(fusion)

    def score(tokens):
        return head(fusion(text, mask, tokens).pooled).squeeze(-1)

    scores, relevance = grad_cam(score, image, mask, attentions)
    torch.testing.assert_close(scores, score(image).detach())
    assert relevance.shape == (2, 10) and (relevance >= 0).all() and relevance.sum() > 0
    assert all(attention.recorded == [] and not attention.record_weights for attention in attentions)
    # padding in the first row's text changes neither its score nor its map
    padded = text.clone()
    padded[0, 3:] = 50.0

    def padded_score(tokens):
        return head(fusion(padded, mask, tokens).pooled).squeeze(-1)

    _, relevance_padded = grad_cam(padded_score, image, mask, attentions)
    torch.testing.assert_close(relevance_padded[0], relevance[0], atol=1e-6, rtol=1e-4)
    # one layer at a time differs from their mean
    _, first_layer = grad_cam(score, image, mask, attentions, layers=[0])
    assert not torch.allclose(first_layer, relevance)


def test_grad_cam_reaches_the_attention_of_a_frozen_model():
    fusion, head, text, mask, image = _fusion_and_inputs()
    fusion.requires_grad_(False)
    head.requires_grad_(False)
    _, relevance = grad_cam(lambda t: head(fusion(text, mask, t).pooled).squeeze(-1), image, mask,
                            text_to_image_attentions(fusion))  # fmt: skip
    assert relevance.sum() > 0
    assert all(p.grad is None for p in fusion.parameters())


def test_patch_grid_drops_class_tokens_and_the_peak_maps_to_the_scene_cell():
    relevance = torch.zeros(1, 65)  # class token + 8x8 patches (64 px, patch 8)
    relevance[0, 0] = 100.0  # the class token is not a place in the image
    relevance[0, 1 + 7 * 8 + 6] = 1.0  # patch row 7, column 6
    grid = patch_grid(relevance)
    assert grid.shape == (1, 8, 8) and grid[0, 7, 6] == 1.0
    assert peak_cell(grid[0], cells=3) == (2, 2)  # bottom right of a 3x3 scene
    grid[0, 7, 6], grid[0, 3, 4] = 0.0, 1.0  # patch centre (3.5, 4.5) of 8 -> cell (1, 1)
    assert peak_cell(grid[0], cells=3) == (1, 1)
    with pytest.raises(ExplainError, match="not a square grid"):
        patch_grid(torch.zeros(1, 12), prefix_tokens=1)


def test_heatmap_is_hot_where_the_grid_peaks():
    image = Image.new("RGB", (64, 48), (128, 128, 128))
    grid = torch.zeros(4, 4)
    grid[0, 3] = 1.0  # top right
    picture = heatmap_image(image, grid, alpha=0.6)
    assert picture.size == (64, 48)
    hot, cold = picture.getpixel((60, 3)), picture.getpixel((3, 45))
    assert hot[0] > hot[2] and cold[2] > cold[0]  # red at the peak, blue far from it


def test_models_without_cross_attention_are_refused(tiny_model):
    text_to_image_attentions(tiny_model.fusion)  # ALBEF-style: fine
    with pytest.raises(ExplainError, match="no fusion"):
        text_to_image_attentions(None)


def test_vlp_plot_draws_the_losses_and_the_monitor_of_a_run(tmp_path):
    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    (run / "config.yaml").write_text("monitor: val/acc\n")
    with (run / "csv" / "metrics.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "step", "train/loss_step", "val/loss", "val/acc"])
        for step in range(1, 21):
            writer.writerow([0, step, 5.0 / step, "", ""])
        writer.writerow([0, 20, "", 1.5, 0.6])
    assert vlp_plot([str(run)]) == 0
    with Image.open(run / "curves.png") as png:
        assert png.size[0] > 400
    assert vlp_plot([str(run), "--metrics", "train/nothing*"]) == 2
    assert vlp_plot([str(tmp_path / "empty")]) == 2


def _bright_square_score(pixels):
    """A stand-in for a model's score: how bright channel 0 is in rows 8-15, columns 24-31 (the 'object')."""
    return pixels[:, 0, 8:16, 24:32].mean(dim=(1, 2))


def test_occlusion_maps_how_much_the_score_drops_under_each_window():
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 32, 32) * 0.1
    pixels[:, 0, 8:16, 24:32] = 1.0  # the object the score needs
    scores, grid = occlusion(_bright_square_score, pixels, window=8, stride=8)
    torch.testing.assert_close(scores, _bright_square_score(pixels))
    assert grid.shape == (2, 4, 4) and (grid >= 0).all()
    assert peak_cell(grid[0], 4) == (1, 3)  # the block that holds the object
    # with stride == window each block is one window: its value is the drop when that block alone is
    # filled with the image's per-channel median
    fill = pixels.flatten(2).median(dim=2).values
    for row, col in [(1, 3), (0, 0), (2, 1)]:
        hidden = pixels.clone()
        hidden[:, :, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8] = fill[:, :, None, None]
        drop = (scores - _bright_square_score(hidden)).clamp(min=0)
        torch.testing.assert_close(grid[:, row, col], drop)
    # overlapping windows: a 7x7 sweep in 4 px blocks, and the same map however many windows run per call
    _, fine = occlusion(_bright_square_score, pixels, window=8, stride=4, max_batch=64)
    _, one_at_a_time = occlusion(_bright_square_score, pixels, window=8, stride=4, max_batch=1)
    assert fine.shape == (2, 8, 8) and peak_cell(fine[1], 4) == (1, 3)
    torch.testing.assert_close(fine, one_at_a_time)
    with pytest.raises(ExplainError, match="stride <= window"):
        occlusion(_bright_square_score, pixels, window=4, stride=8)
    assert occlusion_window(64) == (16, 8) and occlusion_window(384) == (96, 48)
    assert occlusion_window(64, window=20) == (20, 10) and occlusion_window(64, 20, 5) == (20, 5)


# --- through vlp.load and vlp-explain ----------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(synth_data, tmp_path_factory):
    """The demo's model with random weights, exported: its folder and ``vlp.load`` of it."""
    import vlp
    from vlp.export import export

    root = tmp_path_factory.mktemp("explain")
    out = export(build_checkpoint(root / "run", synth_data.root).checkpoint, root / "export")
    return out, vlp.load(out)


def test_an_export_explains_its_itm_scores_patch_by_patch(exported, synth_data):
    from vlp.inference import MissingHead
    from vlp.objectives.itm import ImageTextMatching

    _, model = exported
    images = open_images(sorted(caption_image_files(synth_data).values())[:3])
    texts = ["A red circle.", "Two blue squares and a green triangle.", "A white diamond on the left."]
    explanation = model.explain(images, texts)
    assert explanation.grids.shape == (3, 3, 3)  # 72 px in 24 px patches, the class token dropped
    assert (explanation.grids >= 0).all() and explanation.answers is None
    itm = model.head(ImageTextMatching, "test", "")
    with torch.no_grad():
        image = model.model.encode_image(model.pixel_values(images))
        text = model.model.encode_text(*model.text_inputs(texts))
        logits = itm.match_logits(model.model, text.tokens, text.attention_mask, image.tokens)
    torch.testing.assert_close(explanation.scores, logits[:, 1].float(), atol=1e-5, rtol=1e-5)
    assert explanation.heatmap(1).size == images[1].size
    with pytest.raises(MissingHead, match="explain.*VQAClassification"):
        model.explain(images[:1], ["What color is the circle?"], task="vqa")


def test_an_export_explains_its_itm_scores_by_occlusion(exported, synth_data):
    _, model = exported
    images = open_images(sorted(caption_image_files(synth_data).values())[:3])
    texts = ["A red circle.", "Two blue squares and a green triangle.", "A white diamond on the left."]
    explanation = model.explain(images, texts, method="occlusion")
    assert explanation.method == "occlusion" and explanation.grids.shape == (3, 8, 8)  # 18 px windows, 9 px
    torch.testing.assert_close(explanation.scores, model.explain(images, texts).scores, atol=1e-5, rtol=1e-5)
    # batches of 2 and 1 (several window positions per call either way): the same maps
    model.batch_size, batch_size = 2, model.batch_size
    try:
        torch.testing.assert_close(model.explain(images, texts, method="occlusion").grids, explanation.grids)
    finally:
        model.batch_size = batch_size
    assert model.explain(images[:1], texts[:1], method="occlusion", window=36).grids.shape == (1, 4, 4)
    with pytest.raises(ExplainError, match="window and stride set the occlusion"):
        model.explain(images[:1], texts[:1], window=8)
    with pytest.raises(ExplainError, match="layers choose Grad-CAM"):
        model.explain(images[:1], texts[:1], method="occlusion", layers=[0])
    with pytest.raises(ValueError, match="method must be one of gradcam, occlusion"):
        model.explain(images[:1], texts[:1], method="saliency")


def test_vlp_explain_writes_a_heatmap_and_scores_synthetic_probes(exported, synth_data, tmp_path, capsys):
    from vlp.explain import main as vlp_explain

    folder, _ = exported
    image = sorted(caption_image_files(synth_data).values())[0]
    out = tmp_path / "heat.png"
    assert vlp_explain([str(folder), "--image", str(image), "--text", "A red circle", "--out", str(out)]) == 0
    with Image.open(out) as png:
        assert png.size == (2 * 256 + 4, 256)  # the image and its heatmap side by side
    assert vlp_explain([str(folder), "--probes", "6", "--out", str(tmp_path / "probes")]) == 0
    result = json.loads((tmp_path / "probes" / "hit_rate.json").read_text())
    assert result["probes"] == 6 and 0.0 <= result["hit_rate"] <= 1.0 and result["chance_cell"] == 1 / 9
    assert len(list((tmp_path / "probes").glob("probe*.png"))) == 6
    occluded = ["--probes", "4", "--method", "occlusion", "--out", str(tmp_path / "o")]
    assert vlp_explain([str(folder), *occluded]) == 0
    result = json.loads((tmp_path / "o" / "hit_rate.json").read_text())
    assert result["method"] == "occlusion" and result["probes"] == 4
    assert vlp_explain([str(folder), "--probes", "2", "--window", "8"]) == 2  # Grad-CAM has no window
    assert "window and stride set the occlusion" in capsys.readouterr().err
    assert vlp_explain([str(tmp_path / "no-export"), "--probes", "2"]) == 2
    assert "not a vlp-export folder" in capsys.readouterr().err


def test_probes_single_out_one_object():
    from vlp.explain import object_probes

    for task in ("itm", "vqa"):
        probes = object_probes(20, task, seed=3)
        assert len(probes) == 20 and all(2 <= p.num_objects <= 4 for p in probes)
        assert all(0 <= p.cell[0] < 3 and 0 <= p.cell[1] < 3 for p in probes)
    assert object_probes(3, "vqa", seed=3)[0].text.startswith("What color is the ")
    assert [p.text for p in object_probes(5, "itm", seed=3)] == [
        p.text for p in object_probes(5, "itm", seed=3)
    ]
