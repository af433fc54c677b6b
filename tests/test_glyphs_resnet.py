"""The trained ResNet-18 zoo entry (glyphs_resnet18): its input mapping and its builder, on a few images; the full
build (about 6 minutes) runs in benchmarks/bench_search.py, and its accuracy check is part of the builder."""

from __future__ import annotations

import numpy as np
import pytest

from effc.ir import load_model
from effc.onnx_runtime import ort_session
from effc.zoo import ZooModel, glyphs, glyphs_resnet
from effc.zoo.vgg import TrainingRecipe


def test_input_repeats_each_glyph_pixel_two_by_two():
    images, _ = glyphs.render_set(3, seed=0, fonts=glyphs.TRAIN_FONTS)
    x = glyphs_resnet.to_input64(images)
    small = glyphs.to_input(images)
    assert x.shape == (3, 3, 64, 64) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    for dy in (0, 1):
        for dx in (0, 1):
            assert np.array_equal(x[:, :, dy::2, dx::2], small)


def _files(folder) -> ZooModel:
    return ZooModel("glyphs_resnet18", folder / "m.onnx", folder / "m_calib.npz", folder / "m_eval.npz", True)


def test_builder_writes_a_model_that_onnx_runtime_runs_as_torch_does(tmp_path):
    images, labels = glyphs.render_set(64, seed=5, fonts=glyphs.TRAIN_FONTS)
    model = _files(tmp_path)
    score = glyphs_resnet.build(model, images, labels, TrainingRecipe(epochs=1, batch_size=32), min_accuracy=0.0,
                                test_count=20)
    assert model.exists() and 0.0 <= score <= 1.0
    with np.load(model.eval_path) as test:
        x, test_labels = test["input"], test["labels"]
    assert x.shape == (20, 3, 64, 64) and test_labels.shape == (20,)
    logits = ort_session(load_model(model.onnx_path)).run(None, {"input": x})[0]
    assert logits.shape == (20, len(glyphs.CLASSES))
    assert float(np.mean(logits.argmax(1) == test_labels)) == pytest.approx(score)


def test_builder_refuses_a_model_below_its_accuracy_bar_and_writes_nothing(tmp_path):
    images, labels = glyphs.render_set(32, seed=5, fonts=glyphs.TRAIN_FONTS)
    model = _files(tmp_path)
    with pytest.raises(RuntimeError, match="below"):
        glyphs_resnet.build(model, images, labels, TrainingRecipe(epochs=1, batch_size=32), min_accuracy=1.01,
                            test_count=20)
    assert not any(path.exists() for path in model.files())
