"""The rendered glyph data set and the VGG-style classifier trained on it: the data is deterministic and split by
font, training is deterministic, and the zoo's width-1.0 model reaches its stated accuracy on held-out fonts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effc.ir import load_model
from effc.onnx_runtime import ort_session
from effc.zoo import glyphs, vgg

# measured when the model was built (effc/zoo/README.md); the test allows one point below it
STATED_TEST_ACCURACY = 0.984


def test_rendering_is_deterministic_and_can_be_done_in_pieces():
    images, labels = glyphs.render_set(40, seed=3, fonts=glyphs.TEST_FONTS)
    again, _ = glyphs.render_set(40, seed=3, fonts=glyphs.TEST_FONTS)
    tail, tail_labels = glyphs.render_set(20, seed=3, fonts=glyphs.TEST_FONTS, start=20)
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
    assert images.tobytes() == again.tobytes()
    assert tail.tobytes() == images[20:].tobytes() and (tail_labels == labels[20:]).all()
    other_seed, _ = glyphs.render_set(40, seed=4, fonts=glyphs.TEST_FONTS)
    assert other_seed.tobytes() != images.tobytes()
    assert sorted(np.bincount(labels)) == [2] * len(glyphs.CLASSES)


def test_training_and_test_fonts_are_disjoint_families():
    train = {f.split("/")[0] for f in glyphs.TRAIN_FONTS}
    test = {f.split("/")[0] for f in glyphs.TEST_FONTS}
    assert train and test and not train & test
    assert len(glyphs.TRAIN_FONTS) >= 20 and len(glyphs.TEST_FONTS) >= 8


def test_model_input_is_nchw_in_unit_range():
    images, _ = glyphs.render_set(4, seed=0, fonts=glyphs.TRAIN_FONTS)
    x = glyphs.to_input(images)
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert x[1, 2, 5, 7] == np.float32(images[1, 5, 7, 2]) / np.float32(255.0)


@pytest.mark.parametrize("width", vgg.WIDTHS)
def test_width_multiplier_scales_channels_and_macs(width):
    model = vgg.vgg(width)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [max(4, round(c * width)) for c in vgg.LAYERS if c != "M"]
    counted = sum(c.in_channels * c.out_channels * 9 * side * side
                  for c, side in zip(convs, [32, 32, 16, 8][:len(convs)]))
    assert vgg.macs(width) == counted + model[-1].in_features * len(glyphs.CLASSES)
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, len(glyphs.CLASSES))


def test_augmentation_is_seeded_and_keeps_shape_and_range():
    x = torch.rand(6, 3, 32, 32)
    first = vgg.augment(x, torch.Generator().manual_seed(1))
    again = vgg.augment(x, torch.Generator().manual_seed(1))
    assert first.shape == x.shape and torch.equal(first, again)
    assert not torch.equal(first, x) and 0.0 <= float(first.min()) and float(first.max()) <= 1.0


@pytest.mark.parametrize("recipe", [vgg.TrainingRecipe(width=0.25, epochs=1, augment=True, batch_size=32),
                                    vgg.TrainingRecipe(width=0.25, epochs=1, batch_size=32,
                                                       teacher=vgg.vgg(0.5).eval())])
def test_training_is_deterministic(recipe):
    images, labels = glyphs.render_set(96, seed=5, fonts=glyphs.TRAIN_FONTS)
    first, again = (vgg.train(images, labels, recipe).state_dict() for _ in range(2))
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.zoo
def test_zoo_model_reaches_its_stated_accuracy_on_held_out_fonts():
    model = vgg.get()
    with np.load(model.eval_path) as test:
        x, labels = test[vgg.INPUT_NAME], test["labels"]
    assert x.shape == (vgg.TEST_COUNT, 3, 32, 32) and labels.shape == (vgg.TEST_COUNT,)
    with np.load(model.calib_path) as calibration:
        assert list(calibration.files) == [vgg.INPUT_NAME] and len(calibration[vgg.INPUT_NAME]) == vgg.CALIB_COUNT
    logits = ort_session(load_model(model.onnx_path)).run(None, {vgg.INPUT_NAME: x})[0]
    assert float(np.mean(logits.argmax(1) == labels)) >= STATED_TEST_ACCURACY - 0.01
