"""ResNet-18 trained here on the rendered glyphs (effc/zoo/glyphs.py), so that ResNet-18 figures (agreement after
int8 and pruning) rest on trained weights; the zoo entry `glyphs_resnet18`, built into the glyph cache on first use.

The network is effc/zoo/resnet.py's ImageNet ResNet-18 (7×7 stride-2 stem, max pool, four stages of basic blocks)
with 20 outputs. The 32×32 glyph images are shown to it 2× upsampled (nearest) to 64×64, so that its last stage still
sees 2×2 positions and its convolutions are large enough to time (0.15 G MACs an image, against 1.8 G at 224×224).
"""

from __future__ import annotations

import numpy as np

from effc.zoo import ZooModel
from effc.zoo.glyphs import CLASSES, TEST_FONTS, TRAIN_FONTS, render_set, to_input
from effc.zoo.vgg import CALIB_COUNT, CALIB_SEED, INPUT_NAME, TEST_SEED, TrainingRecipe, accuracy, cached_entry, \
    export, train

NAME = "glyphs_resnet18"
SIDE = 64
TEST_COUNT = 1000  # the first 1,000 of glyphs_vgg's held-out-font test images
RECIPE = TrainingRecipe(epochs=2)
MIN_ACCURACY = 0.95  # the build fails below this: a badly trained model would make every figure on it meaningless


def to_input64(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 32, 32, 3] -> float32 [N, 3, 64, 64] in [0, 1], each pixel repeated 2×2."""
    return np.ascontiguousarray(to_input(images).repeat(2, axis=2).repeat(2, axis=3))


def network():
    from effc.zoo.resnet import ResNet18

    return ResNet18(num_classes=len(CLASSES))


def get(force: bool = False) -> ZooModel:
    """The trained ResNet-18 with calibration (training fonts) and labelled test (held-out fonts) splits; the first
    call trains it (about 6 minutes on 2 cores)."""
    return cached_entry(NAME, build, force)


def build(model: ZooModel, images: np.ndarray, labels: np.ndarray, recipe: TrainingRecipe = RECIPE,
          min_accuracy: float = MIN_ACCURACY, test_count: int = TEST_COUNT) -> float:
    """Train on (images, labels), check the held-out-font accuracy and write the model's three files; returns that
    accuracy. RuntimeError, with nothing written, when it is below `min_accuracy`."""
    from effc.zoo.build import _save_npz

    trained = train(images, labels, recipe, network=network, inputs=to_input64)
    test_images, test_labels = render_set(test_count, TEST_SEED, TEST_FONTS)
    score = accuracy(trained, test_images, test_labels, inputs=to_input64)
    if score < min_accuracy:
        raise RuntimeError(f"{NAME}: trained to {score:.1%} on the held-out fonts, below {min_accuracy:.0%}")
    calibration, _ = render_set(CALIB_COUNT, CALIB_SEED, TRAIN_FONTS)
    _save_npz(model.calib_path, **{INPUT_NAME: to_input64(calibration)})
    _save_npz(model.eval_path, **{INPUT_NAME: to_input64(test_images)}, labels=test_labels)
    export(trained, model.onnx_path, SIDE)
    return score
