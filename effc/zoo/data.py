"""Deterministic synthetic inputs: "natural-ish" ImageNet-shaped images and random token ids."""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# (grid size, amplitude): coarse blobs dominate, finer octaves add texture.
_OCTAVES = ((3, 1.0), (7, 0.5), (15, 0.25), (31, 0.12), (63, 0.06))


def _bilinear_matrix(size: int, grid: int) -> np.ndarray:
    """[size, grid] matrix M so that M @ g @ M.T upsamples a grid×grid field bilinearly (align_corners)."""
    pos = np.linspace(0.0, grid - 1, size)
    low = np.minimum(np.floor(pos).astype(int), grid - 2)
    frac = pos - low
    m = np.zeros((size, grid))
    m[np.arange(size), low] = 1.0 - frac
    m[np.arange(size), low + 1] = frac
    return m


def synthetic_images(count: int, seed: int, size: int = 224) -> np.ndarray:
    """float32 [count, 3, size, size], ImageNet-normalized smooth random fields with per-image colour casts."""
    rng = np.random.default_rng(seed)
    matrices = {grid: _bilinear_matrix(size, grid) for grid, _ in _OCTAVES}
    images = np.empty((count, 3, size, size), dtype=np.float32)
    for i in range(count):
        field = np.zeros((3, size, size))
        for grid, amplitude in _OCTAVES:
            m = matrices[grid]
            noise = rng.standard_normal((3, grid, grid))
            # Channels share part of their structure, as colour channels of real photos do.
            noise = 0.6 * noise.mean(axis=0, keepdims=True) + 0.4 * noise
            field += amplitude * (m @ noise @ m.T)
        colour = rng.uniform(0.25, 0.75, size=(3, 1, 1))
        contrast = rng.uniform(0.1, 0.25)
        rgb = np.clip(colour + contrast * field, 0.0, 1.0)
        images[i] = (rgb - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    return images


def random_token_ids(count: int, seq: int, vocab: int, seed: int) -> np.ndarray:
    """int64 [count, seq] uniform token ids."""
    return np.random.default_rng(seed).integers(0, vocab, size=(count, seq), dtype=np.int64)
