"""A small residual CNN for scikit-learn's 8×8 digits, its fixed data split and its training loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

TEST_SIZE = 360
CALIB_SIZE = 200
SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsSplit:
    train_x: np.ndarray  # float32 [n, 1, 8, 8] in [0, 1]
    train_y: np.ndarray  # int64 [n]
    calib_x: np.ndarray  # a stratified subset of train_x
    test_x: np.ndarray
    test_y: np.ndarray


def load_split() -> DigitsSplit:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    _, calib_x = train_test_split(train_x, test_size=CALIB_SIZE, stratify=train_y, random_state=SPLIT_SEED)
    return DigitsSplit(train_x, train_y, calib_x, test_x, test_y)


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_relu(1, 16), _conv_bn_relu(16, 32), nn.MaxPool2d(2))
        self.block = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.relu(x + self.block(x))
        return self.head(torch.flatten(x, 1))


def train(split: DigitsSplit, seed: int = 0, epochs: int = 30, batch_size: int = 32) -> DigitsCNN:
    torch.manual_seed(seed)
    model = DigitsCNN()
    x, y = torch.from_numpy(split.train_x), torch.from_numpy(split.train_y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=epochs * ((len(x) + batch_size - 1) // batch_size))
    shuffler = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=shuffler).split(batch_size):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
