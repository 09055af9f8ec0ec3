"""The data pipeline benchmark runs end to end (``--quick``) and reports consistent numbers.

Only the bookkeeping is checked: three pipelines, positive rates, medians of the repeats and ratios that
follow from the medians. How fast vlp is against the others is what the benchmark measures, never a test.
"""

from __future__ import annotations

import json
import statistics

import pytest

pytest.importorskip("open_clip_train", reason="the bench extra (open_clip_torch) is not installed")

from benchmarks.data_pipeline import DECODE_LIMIT, OPEN_CLIP, VLP, main  # noqa: E402

PIPELINES = (VLP, DECODE_LIMIT, OPEN_CLIP)


def ratio_follows(ratio: float, numerator: float, denominator: float) -> bool:
    # The JSON rounds medians to 2-4 decimals and ratios to 3; a 1% tolerance absorbs both.
    return ratio == pytest.approx(numerator / denominator, rel=1e-2)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    main(["--quick", "--out", str(out)])
    assert (out / "data_pipeline.md").is_file()
    return json.loads((out / "data_pipeline.json").read_text())


def test_every_pipeline_has_positive_rates_and_cpu_costs(report: dict) -> None:
    assert report["benchmark"] == "data_pipeline"
    assert set(report["pipelines"]) == set(PIPELINES)
    repeats = report["settings"]["repeats"]
    for row in report["pipelines"].values():
        assert len(row["samples_per_s_all"]) == len(row["cpu_ms_per_sample_all"]) == repeats
        assert all(rate > 0 for rate in row["samples_per_s_all"])
        assert all(ms > 0 for ms in row["cpu_ms_per_sample_all"])
        assert row["samples_per_s_median"] == pytest.approx(
            statistics.median(row["samples_per_s_all"]), abs=0.01
        )


def test_ratios_follow_from_the_medians(report: dict) -> None:
    rows = report["pipelines"]
    rate = {name: rows[name]["samples_per_s_median"] for name in PIPELINES}
    cpu = {name: rows[name]["cpu_ms_per_sample_median"] for name in PIPELINES}
    for name in PIPELINES:
        row = rows[name]
        assert ratio_follows(row["ratio_vs_decode_limit"], rate[name], rate[DECODE_LIMIT])
        assert ratio_follows(row["ratio_vs_open_clip"], rate[name], rate[OPEN_CLIP])
        # CPU per sample: less is faster, so the speed ratio is the reference's cost over this one's.
        assert ratio_follows(row["cpu_ratio_vs_decode_limit"], cpu[DECODE_LIMIT], cpu[name])
        assert ratio_follows(row["cpu_ratio_vs_open_clip"], cpu[OPEN_CLIP], cpu[name])
    assert rows[DECODE_LIMIT]["ratio_vs_decode_limit"] == rows[OPEN_CLIP]["ratio_vs_open_clip"] == 1.0
