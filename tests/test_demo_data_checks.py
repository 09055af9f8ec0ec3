"""`make demo` reuses the synthetic data it finds; these checks stop it when that data was drawn for an
older demo (another scene size, fewer NLVR2 training pairs) instead of training on it silently."""

import importlib.util
import sys
from pathlib import Path

import pytest

from vlp.data.synthetic import DEFAULT_IMAGE_SIZE, main
from vlp.data.synthetic_tasks import generate_nlvr2_benchmark

DEMO_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("vlp_demo_script", DEMO_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_nlvr2_with_fewer_training_pairs_than_the_demo_draws_stops_it(demo, tmp_path, monkeypatch):
    raw = tmp_path / "synth" / "raw"
    demo.check_nlvr2_size(raw)  # nothing drawn yet: the demo will draw it
    generate_nlvr2_benchmark(raw / "nlvr2", 6, 2, 2, DEFAULT_IMAGE_SIZE, seed=0)
    monkeypatch.setattr(demo, "NLVR2_TRAIN_PAIRS", 7)
    with pytest.raises(SystemExit, match=r"has 6 training pairs, the demo now draws 7: delete that folder"):
        demo.check_nlvr2_size(raw)
    monkeypatch.setattr(demo, "NLVR2_TRAIN_PAIRS", 6)
    demo.check_nlvr2_size(raw)  # rows share pairs (several statements each): pairs are counted, not rows


def test_scenes_drawn_at_another_size_stop_the_demo(demo, tmp_path):
    raw = tmp_path / "synth" / "raw"
    main(["--out", str(raw), "--tasks", "captions", "--n-train", "2", "--n-val", "1", "--n-test", "1"])
    demo.check_scene_size(raw)
    other = tmp_path / "other" / "raw"
    size = DEFAULT_IMAGE_SIZE - 8
    main(["--out", str(other), "--tasks", "captions", "--n-train", "2", "--n-val", "1", "--n-test", "1",
          "--image-size", str(size)])  # fmt: skip
    with pytest.raises(SystemExit, match=rf"has {size} px scenes, the demo now draws {DEFAULT_IMAGE_SIZE}"):
        demo.check_scene_size(other)
