"""DS-CNN for keyword spotting (Zhang et al. 2017, "Hello Edge"; the small variant MLPerf Tiny uses), and a
synthetic keyword task rendered here to train it on.

Input: [N, 1, 49, 10], 49 frames of 10 MFCC-like coefficients. A 10x4 stride-2 conv to 64 channels, four
depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, each with BatchNorm and ReLU), global average pooling
and a linear layer to 12 classes: about 22k weights (87 KB in float32), 2.7M MACs; its largest activation is
25x5x64 floats (32 KB), so it fits a Cortex-M4's RAM in float.

The task: 10 "keywords" (each a fixed smooth spectro-temporal pattern of 20 frames, placed at a random time and
loudness), "silence" (background only) and "unknown" (a fresh random pattern each time), over smooth background
noise. It is not speech: it gives the model trained weights and an accuracy to keep, not a claim about real audio.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

FRAMES, COEFFS, CLASSES, WIDTH = 49, 10, 12, 64
KEYWORD_FRAMES = 20
SILENCE, UNKNOWN = 10, 11
TEMPLATE_SEED = 1234
TRAIN_SIZE, CALIB_SIZE, EVAL_SIZE = 1600, 100, 300


def _smooth(rng: np.random.Generator, frames: int, grid: tuple[int, int]) -> np.ndarray:
    """A [frames, COEFFS] field: a random grid upsampled bilinearly (np.interp along each axis)."""
    coarse = rng.standard_normal(grid)
    rows = np.stack([np.interp(np.linspace(0, grid[1] - 1, COEFFS), np.arange(grid[1]), r) for r in coarse])
    return np.stack([np.interp(np.linspace(0, grid[0] - 1, frames), np.arange(grid[0]), c) for c in rows.T], axis=1)


def keyword_templates() -> np.ndarray:
    """float [10, KEYWORD_FRAMES, COEFFS]: the keywords, the same in every split."""
    rng = np.random.default_rng(TEMPLATE_SEED)
    return np.stack([_smooth(rng, KEYWORD_FRAMES, (6, 5)) for _ in range(SILENCE)])


def keyword_samples(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [count, 1, FRAMES, COEFFS], int64 [count] labels), classes balanced, seeded."""
    rng = np.random.default_rng(seed)
    templates = keyword_templates()
    labels = np.arange(count) % CLASSES
    rng.shuffle(labels)
    x = np.empty((count, 1, FRAMES, COEFFS), dtype=np.float32)
    for i, label in enumerate(labels):
        sample = 0.5 * _smooth(rng, FRAMES, (8, 4)) + 0.3 * rng.standard_normal((FRAMES, COEFFS))
        if label != SILENCE:
            pattern = templates[label] if label < SILENCE else _smooth(rng, KEYWORD_FRAMES, (6, 5))
            start = rng.integers(0, FRAMES - KEYWORD_FRAMES + 1)
            sample[start:start + KEYWORD_FRAMES] += rng.uniform(0.5, 1.1) * pattern
        x[i, 0] = sample
    return x, labels.astype(np.int64)


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU()]


class DSCNN(nn.Module):
    def __init__(self, width: int = WIDTH, blocks: int = 4, classes: int = CLASSES):
        super().__init__()
        layers = [nn.Conv2d(1, width, (10, 4), stride=2, padding=(5, 1), bias=False), *_bn_relu(width)]
        for _ in range(blocks):
            layers += [nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False), *_bn_relu(width),
                       nn.Conv2d(width, width, 1, bias=False), *_bn_relu(width)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def train(seed: int = 0, epochs: int = 6, batch_size: int = 32) -> DSCNN:
    """DS-CNN trained on TRAIN_SIZE synthetic keyword samples (seeded, CPU, a minute or two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # intra-op threads only slow these small convolutions down (10x on a loaded 2-core host)
    try:
        return _train(seed, epochs, batch_size)
    finally:
        torch.set_num_threads(threads)


def _train(seed: int, epochs: int, batch_size: int) -> DSCNN:
    torch.manual_seed(seed)
    x, y = keyword_samples(TRAIN_SIZE, seed=seed + 100)
    model = DSCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * (len(x) // batch_size))
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x) - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
            schedule.step()
    return model.eval()
