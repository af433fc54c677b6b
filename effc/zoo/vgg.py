"""The survey's VGG-style CNN with a width multiplier, trained here with torch on the rendered glyphs
(effc/zoo/glyphs.py), optionally with augmentation and distillation; and the zoo entry `glyphs_vgg` (width 1.0),
built into the cache on first use."""

from __future__ import annotations

import fcntl
import pathlib
from dataclasses import dataclass

import numpy as np

from effc.zoo import ZooModel, cache_dir
from effc.zoo.glyphs import CLASSES, TEST_FONTS, TRAIN_FONTS, render_set, to_input

NAME = "glyphs_vgg"
INPUT_NAME = "input"
WIDTHS = (0.25, 0.5, 1.0, 1.4)
# Conv channels at width 1.0 ("M": 2x2 max pool); small enough that width 1.0 trains in minutes on 2 cores.
LAYERS = (16, 32, "M", 64, "M", 128, "M")
TRAIN_COUNT, CALIB_COUNT, TEST_COUNT = 24000, 256, 2000
TRAIN_SEED, CALIB_SEED, TEST_SEED, TORCH_SEED = 21, 22, 23, 0
DATA_VERSION = "1"  # bump when rendering, the architecture or training changes


@dataclass(frozen=True)
class TrainingRecipe:
    width: float = 1.0
    epochs: int = 3
    augment: bool = False
    teacher: object = None  # a trained torch model whose softened logits are distilled, or None
    temperature: float = 4.0
    distill_weight: float = 0.7
    batch_size: int = 128
    learning_rate: float = 2e-3


def vgg(width: float = 1.0, classes: int = len(CLASSES)):
    """Conv-BN-ReLU blocks with LAYERS' channels times `width` (at least 4), then one linear classifier."""
    from torch import nn

    layers, channels = [], 3
    for item in LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        out = max(4, round(item * width))
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        channels = out
    pooled = 32 // 2 ** LAYERS.count("M")
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.1), nn.Linear(channels * pooled * pooled, classes))


def training_set() -> tuple[np.ndarray, np.ndarray]:
    """The rendered training images (training fonts), cached as uint8 since every variant trains on them."""
    path = _folder() / "glyphs_train.npz"
    if not path.exists():
        with _locked():
            if not path.exists():
                from effc.zoo.build import _save_npz

                images, labels = render_set(TRAIN_COUNT, TRAIN_SEED, TRAIN_FONTS)
                _save_npz(path, images=images, labels=labels)
    with np.load(path) as npz:
        return npz["images"], npz["labels"]


def train(images: np.ndarray, labels: np.ndarray, recipe: TrainingRecipe = TrainingRecipe(), network=None,
          inputs=to_input):
    """A trained model (eval mode); deterministic in the data and the recipe (seeded, one process). `network`
    builds another torch model than vgg(recipe.width), and `inputs` maps the uint8 images to its input."""
    import torch
    from torch import nn

    torch.manual_seed(TORCH_SEED)
    model = network() if network is not None else vgg(recipe.width)
    x, y = torch.from_numpy(inputs(images)), torch.from_numpy(labels)
    steps = recipe.epochs * ((len(x) + recipe.batch_size - 1) // recipe.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.learning_rate, total_steps=steps)
    generator = torch.Generator().manual_seed(TORCH_SEED)
    teacher = recipe.teacher.eval() if recipe.teacher is not None else None
    model.train()
    for _ in range(recipe.epochs):
        for batch in torch.randperm(len(x), generator=generator).split(recipe.batch_size):
            inputs = augment(x[batch], generator) if recipe.augment else x[batch]
            logits = model(inputs)
            loss = nn.functional.cross_entropy(logits, y[batch])
            if teacher is not None:
                with torch.no_grad():
                    soft = nn.functional.softmax(teacher(inputs) / recipe.temperature, dim=1)
                distilled = nn.functional.kl_div(nn.functional.log_softmax(logits / recipe.temperature, dim=1),
                                                 soft, reduction="batchmean") * recipe.temperature ** 2
                loss = (1 - recipe.distill_weight) * loss + recipe.distill_weight * distilled
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def augment(x, generator):
    """Batch augmentation on [N, 3, 32, 32]: random affine (±10°, scale 0.9-1.1, shift ±3 px), channel order
    permuted, colours inverted for half, and one random 8×8 patch cut out."""
    import math

    import torch
    from torch import nn

    n = len(x)
    uniform = lambda low, high, *shape: low + (high - low) * torch.rand(*shape or (n,), generator=generator)
    angle, scale = uniform(-math.pi / 18, math.pi / 18), uniform(0.9, 1.1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / scale, -torch.sin(angle) / scale
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / scale, torch.cos(angle) / scale
    theta[:, :, 2] = uniform(-3 / 16, 3 / 16, n, 2)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    out = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    permutation = torch.stack([torch.randperm(3, generator=generator) for _ in range(n)])
    out = torch.gather(out, 1, permutation[:, :, None, None].expand_as(out))
    invert = torch.rand(n, generator=generator) < 0.5
    out[invert] = 1.0 - out[invert]
    corner = torch.randint(0, 25, (n, 2), generator=generator)
    rows, cols = torch.arange(32)[None, :], torch.arange(32)[None, :]
    patch = (((rows >= corner[:, :1]) & (rows < corner[:, :1] + 8))[:, :, None]
             & ((cols >= corner[:, 1:]) & (cols < corner[:, 1:] + 8))[:, None, :])
    return out.masked_fill(patch[:, None], 0.5)


def accuracy(model, images: np.ndarray, labels: np.ndarray, batch: int = 500, inputs=to_input) -> float:
    import torch

    x = inputs(images)
    with torch.no_grad():
        predicted = np.concatenate([model(torch.from_numpy(x[i:i + batch])).argmax(1).numpy()
                                    for i in range(0, len(x), batch)])
    return float(np.mean(predicted == labels))


def macs(width: float) -> int:
    """Multiply-accumulates of one 32×32 image through vgg(width)."""
    total, channels, side = 0, 3, 32
    for item in LAYERS:
        if item == "M":
            side //= 2
            continue
        out = max(4, round(item * width))
        total += channels * out * 9 * side * side
        channels = out
    return total + channels * side * side * len(CLASSES)


def test_split() -> tuple[np.ndarray, np.ndarray]:
    """The held-out-font test images (uint8) and labels."""
    return render_set(TEST_COUNT, TEST_SEED, TEST_FONTS)


def get(force: bool = False) -> ZooModel:
    """The width-1.0 model trained on the glyphs, with its calibration (training fonts) and test (held-out fonts)
    splits, built into the cache on first use (a few minutes on 2 cores)."""
    return cached_entry(NAME, _build, force)


def cached_entry(name: str, build, force: bool = False) -> ZooModel:
    """The glyph cache's entry `name`, built by build(model, images, labels) from the training set when missing."""
    folder = _folder()
    model = ZooModel(name, folder / f"{name}.onnx", folder / f"{name}_calib.npz", folder / f"{name}_eval.npz",
                     has_labels=True)
    if model.exists() and not force:
        return model
    images, labels = training_set()
    with _locked():
        if force or not model.exists():
            build(model, images, labels)
    return model


def _build(model: ZooModel, images: np.ndarray, labels: np.ndarray) -> None:
    from effc.zoo.build import _save_npz

    trained = train(images, labels)
    test_images, test_labels = test_split()
    calibration, _ = render_set(CALIB_COUNT, CALIB_SEED, TRAIN_FONTS)
    _save_npz(model.calib_path, **{INPUT_NAME: to_input(calibration)})
    _save_npz(model.eval_path, **{INPUT_NAME: to_input(test_images)}, labels=test_labels)
    export(trained, model.onnx_path)


def export(model, path: pathlib.Path, side: int = 32) -> None:
    """Write a trained model taking side×side images as ONNX (opset 17, batch axis `N`, unfolded like the other zoo
    models), atomically."""
    import torch

    from effc.zoo.build import _export

    _export(model, torch.zeros(2, 3, side, side), pathlib.Path(path), INPUT_NAME, "logits",
            {INPUT_NAME: {0: "N"}, "logits": {0: "N"}})


def _folder() -> pathlib.Path:
    folder = cache_dir() / "glyphs" / DATA_VERSION
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class _locked:
    """An exclusive lock on the glyph cache folder (concurrent test workers build once)."""

    def __enter__(self):
        self.file = open(_folder() / ".lock", "w")
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        self.file.close()
