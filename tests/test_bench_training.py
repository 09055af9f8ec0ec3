"""The training-throughput benchmarks run end to end (``--quick``) and report what they compared.

Only the bookkeeping is checked (the contestants, positive rates, ratios that follow from the medians,
equal parameter counts where the benchmark claims the same model); the speed ratios themselves are what
the benchmarks measure, never a test."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("open_clip_train", reason="the bench extra (open_clip_torch) is not installed")


def test_framework_overhead_compares_the_lightning_step_with_a_plain_loop(tmp_path):
    from benchmarks.framework_overhead import main

    main(["--quick", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "framework_overhead.json").read_text())
    rows = {row["loop"]: row for row in report["rows"]}
    assert set(rows) == {"plain PyTorch loop", "vlp (Lightning Trainer)"}
    plain = rows["plain PyTorch loop"]["samples_per_s_median"]
    for row in rows.values():
        assert all(rate > 0 for rate in row["samples_per_s_all"])
        assert row["ratio_vs_plain"] == pytest.approx(row["samples_per_s_median"] / plain, rel=1e-2)
    assert report["settings"]["objectives"] == ["itc", "itm", "mlm"]
    assert (tmp_path / "framework_overhead.md").read_text().count("|") > 10


def test_itc_benchmark_trains_models_of_the_same_size_in_both_frameworks(tmp_path):
    from benchmarks.itc_vs_open_clip import main

    main(["--quick", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "itc_vs_open_clip.json").read_text())
    rows = {row["trainer"]: row for row in report["rows"]}
    assert len(rows) == 2
    open_clip, vlp = rows["open_clip (train_one_epoch)"], rows["vlp (experiment=pretrain_clip)"]
    assert open_clip["parameters"] == vlp["parameters"]  # the same dual encoder, counted
    assert all(rate > 0 for rate in open_clip["samples_per_s_all"] + vlp["samples_per_s_all"])
    assert vlp["ratio_vs_open_clip"] == pytest.approx(
        vlp["samples_per_s_median"] / open_clip["samples_per_s_median"], rel=1e-2
    )
