"""Deterministic text images for the OCR models: lines and pages rendered from Debian fonts, with blur, noise,
mild perspective and colour. Same seed and fonts give the same pixels; nothing is downloaded."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_ROOT = pathlib.Path("/usr/share/fonts/truetype")
# Calibration and evaluation never share a font family.
CALIB_FONTS = ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSerif.ttf", "dejavu/DejaVuSansCondensed.ttf",
               "dejavu/DejaVuSans-Bold.ttf")
EVAL_FONTS = ("liberation/LiberationSans-Regular.ttf", "liberation/LiberationSerif-Regular.ttf",
              "liberation/LiberationSans-Bold.ttf", "freefont/FreeSans.ttf", "freefont/FreeSerif.ttf")
FONT_PACKAGES = "fonts-dejavu-core fonts-liberation fonts-freefont-ttf"

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"
_PUNCTUATION = ".,:-"


@dataclass(frozen=True)
class RenderedLine:
    image: np.ndarray  # uint8 [H, W, 3], RGB
    text: str


def font_paths(names: tuple[str, ...]) -> list[pathlib.Path]:
    """The font files, refusing (with the Debian packages to install) when one is missing."""
    paths = [FONT_ROOT / name for name in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"fonts missing: {', '.join(missing)}; apt-get install {FONT_PACKAGES}")
    return paths


def random_word(rng: np.random.Generator, alphabet: set[str]) -> str:
    """A pronounceable pseudo-word, a number or a capitalised word, using only characters in `alphabet`."""
    kind = rng.random()
    if kind < 0.15:
        word = str(int(rng.integers(0, 10 ** int(rng.integers(1, 5)))))
    else:
        syllables = int(rng.integers(1, 4))
        word = "".join(rng.choice(list(_CONSONANTS)) + rng.choice(list(_VOWELS)) for _ in range(syllables))
        if rng.random() < 0.4:
            word += rng.choice(list(_CONSONANTS))
        if kind > 0.75:
            word = word.capitalize()
    if rng.random() < 0.15:
        word += rng.choice(list(_PUNCTUATION))
    return "".join(c for c in word if c in alphabet)


def random_text(rng: np.random.Generator, alphabet: set[str], max_chars: int) -> str:
    words = [random_word(rng, alphabet) for _ in range(int(rng.integers(1, 5)))]
    text = " ".join(w for w in words if w)
    return text[:max_chars].strip() or "a"


def render_line(rng: np.random.Generator, text: str, font_path: pathlib.Path, height: int = 48) -> np.ndarray:
    """A cropped text line, about `height` pixels tall, uint8 RGB [H, W, 3]."""
    font = ImageFont.truetype(str(font_path), size=int(rng.integers(26, 36)))
    left, top, right, bottom = font.getbbox(text)
    margin_x, margin_y = int(rng.integers(4, 12)), int(rng.integers(4, 10))
    width, text_height = right - left + 2 * margin_x, bottom - top + 2 * margin_y
    background, ink = _colours(rng)
    image = Image.new("RGB", (width, text_height), background)
    ImageDraw.Draw(image).text((margin_x - left, margin_y - top), text, font=font, fill=ink)
    image = _perspective(rng, image, background)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.0))))
    scale = height / image.height
    image = image.resize((max(1, round(image.width * scale)), height), Image.BILINEAR)
    return _add_noise(rng, np.asarray(image))


def render_page(rng: np.random.Generator, alphabet: set[str], font_paths_: list[pathlib.Path],
                size: tuple[int, int] = (384, 512), lines: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A page [H, W, 3] uint8 with `lines` text lines at random places, and their boxes [n, 4] (x0, y0, x1, y1)."""
    height, width = size
    background, ink = _colours(rng)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    boxes = []
    band = height // lines
    for row in range(lines):
        font = ImageFont.truetype(str(font_paths_[int(rng.integers(len(font_paths_)))]), size=int(rng.integers(18, 30)))
        text = random_text(rng, alphabet, max_chars=24)
        left, top, right, bottom = font.getbbox(text)
        if right - left >= width - 8:
            continue
        x = int(rng.integers(4, width - (right - left) - 4))
        y = row * band + int(rng.integers(2, max(3, band - (bottom - top) - 2)))
        draw.text((x - left, y - top), text, font=font, fill=ink)
        boxes.append((x, y, x + right - left, y + bottom - top))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.8))))
    return _add_noise(rng, np.asarray(image)), np.asarray(boxes, np.float32).reshape(-1, 4)


def _colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Background and ink with at least 100 levels of luminance contrast; dark-on-light mostly."""
    light = tuple(int(v) for v in rng.integers(170, 256, size=3))
    dark = tuple(int(v) for v in rng.integers(0, 70, size=3))
    return (dark, light) if rng.random() < 0.15 else (light, dark)


def _perspective(rng: np.random.Generator, image: Image.Image, fill) -> Image.Image:
    """Move each corner by up to 4% of the height and 2% of the width."""
    w, h = image.size
    dx, dy = 0.02 * w, 0.04 * h
    source = [(rng.uniform(-dx, dx) + x, rng.uniform(-dy, dy) + y) for x, y in ((0, 0), (w, 0), (w, h), (0, h))]
    target = [(0, 0), (w, 0), (w, h), (0, h)]
    coefficients = _perspective_coefficients(target, source)
    return image.transform((w, h), Image.PERSPECTIVE, coefficients, Image.BILINEAR, fillcolor=fill)


def _perspective_coefficients(target, source) -> list[float]:
    """PIL's 8 coefficients mapping output (target) points to input (source) points."""
    rows = []
    for (x, y), (u, v) in zip(target, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    solution = np.linalg.solve(np.asarray(rows, np.float64), np.asarray(source, np.float64).reshape(8))
    return [float(c) for c in solution]


def _add_noise(rng: np.random.Generator, pixels: np.ndarray) -> np.ndarray:
    sigma = rng.uniform(0.0, 8.0)
    noisy = pixels.astype(np.float32) + rng.normal(0.0, sigma, size=pixels.shape).astype(np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
