"""A CIFAR-sized data set rendered here: 32×32 RGB images of 20 glyph classes drawn from Debian fonts with random
affine, colours, textured backgrounds and noise. Training and test fonts are disjoint; same seed, same bytes.
Nothing is downloaded."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from effc.zoo.ocr_render import FONT_ROOT, font_paths

CLASSES = "ABDEFGHKMNRTWXY&?#@%"
SIZE = 32
_CANVAS = 64  # drawn at twice the size, then reduced (antialiasing)
# DejaVu and FreeFont train (and calibrate); Liberation, never seen in training, tests.
TRAIN_FONTS = tuple(sorted(f"dejavu/{p.name}" for p in (FONT_ROOT / "dejavu").glob("DejaVu*.ttf")
                           if "MathTeX" not in p.name)) + tuple(sorted(
    f"freefont/{p.name}" for p in (FONT_ROOT / "freefont").glob("Free*.ttf")))
TEST_FONTS = tuple(sorted(f"liberation/{p.name}" for p in (FONT_ROOT / "liberation").glob("Liberation*.ttf")))


def render_set(count: int, seed: int, fonts: tuple[str, ...], start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [count, 32, 32, 3] and labels int64 [count]; image i depends only on (seed, start + i, fonts),
    so a set can be rendered in pieces. Classes cycle, so every class has count / 20 images (±1)."""
    paths = font_paths(fonts)
    images = np.empty((count, SIZE, SIZE, 3), np.uint8)
    labels = np.empty(count, np.int64)
    for i in range(count):
        index = start + i
        rng = np.random.default_rng([seed, index])
        label = index % len(CLASSES)
        images[i] = render_glyph(rng, CLASSES[label], paths[int(rng.integers(len(paths)))])
        labels[i] = label
    return images, labels


def render_glyph(rng: np.random.Generator, glyph: str, font_path) -> np.ndarray:
    """One glyph, uint8 [32, 32, 3]: random size, rotation, shear and offset, ink over a textured background."""
    font = ImageFont.truetype(str(font_path), size=int(rng.integers(30, 50)))
    coverage = _coverage(font, glyph, _affine(rng), (0.0, 0.0))
    background, ink = _colours(rng)
    pixels = _texture(rng, background)
    if rng.random() < 0.5:  # a fainter glyph of any class, pushed towards an edge: clutter to ignore
        other = CLASSES[int(rng.integers(len(CLASSES)))]
        offset = rng.choice([-1, 1], size=2) * rng.uniform(18, 28, size=2)
        faint = _coverage(font, other, _affine(rng), tuple(offset)) * rng.uniform(0.3, 0.6)
        pixels = pixels * (1.0 - faint) + ink * faint
    pixels = pixels * (1.0 - coverage) + ink * coverage
    pixels += rng.normal(0.0, rng.uniform(0.0, 10.0), size=pixels.shape)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _coverage(font, glyph: str, affine: tuple[float, ...], offset: tuple[float, float]) -> np.ndarray:
    """[32, 32, 1] ink coverage in [0, 1] of `glyph` centred (plus `offset` canvas pixels), transformed."""
    mask = Image.new("L", (_CANVAS, _CANVAS), 0)
    left, top, right, bottom = font.getbbox(glyph)
    ImageDraw.Draw(mask).text(((_CANVAS - (right - left)) / 2 - left + offset[0],
                               (_CANVAS - (bottom - top)) / 2 - top + offset[1]), glyph, font=font, fill=255)
    mask = mask.transform((_CANVAS, _CANVAS), Image.AFFINE, affine, Image.BILINEAR)
    return np.asarray(mask.resize((SIZE, SIZE), Image.BOX), np.float32)[..., None] / 255.0


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 32, 32, 3] -> the model's input, float32 [N, 3, 32, 32] in [0, 1]."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def _affine(rng: np.random.Generator) -> tuple[float, ...]:
    """PIL's inverse affine (output -> input pixel) for a rotation of ±15°, shear ±0.2, scale 0.7-1.1 and a shift
    of ±5 canvas pixels, about the canvas centre."""
    angle = np.deg2rad(rng.uniform(-15, 15))
    shear, scale = rng.uniform(-0.2, 0.2), rng.uniform(0.7, 1.1)
    forward = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array(
        [[1.0, shear], [0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    centre = np.array([_CANVAS / 2, _CANVAS / 2])
    shift = rng.uniform(-5, 5, size=2)
    offset = centre - inverse @ (centre + shift)
    return (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and ink colours whose mean luminance differs by at least 90 levels, either way round."""
    while True:
        background, ink = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
        if abs(background.mean() - ink.mean()) >= 70:
            return background, ink


def _texture(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """[32, 32, 3] float: `colour` with a linear gradient, smooth blotches and a few faint stripes."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    gx, gy = rng.uniform(-40, 40, size=2)
    gradient = (gx * (xs - 0.5) + gy * (ys - 0.5))[..., None]
    coarse = rng.normal(0.0, 18.0, size=(4, 4, 3)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse[..., 0]).resize((SIZE, SIZE), Image.BICUBIC))[..., None] + \
        np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((SIZE, SIZE), Image.BICUBIC))
                  for c in range(3)], -1) * 0.5
    period, phase, direction = rng.uniform(3, 9), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
    stripes = (rng.uniform(0, 12) * np.sin(2 * np.pi * (np.cos(direction) * xs + np.sin(direction) * ys)
                                           * SIZE / period + phase))[..., None]
    return colour + gradient + blotches + stripes
