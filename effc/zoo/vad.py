"""Silero VAD, a trained voice-activity detector shipped in the silero-vad wheel (the `zoo` extra): the If/LSTM
model (opset 16, both sample rates behind If branches) and its If-less opset-18 export. Inputs are one 512-sample
chunk at 16 kHz, the recurrent state and the sample rate; feeds are synthesized here (voiced harmonics with a
syllable envelope, and noise), nothing is downloaded."""

from __future__ import annotations

import pathlib

import numpy as np

from effc.zoo import wheel_file

VAD_FILES = {"vad": "silero_vad.onnx", "vad_ifless": "silero_vad_op18_ifless.onnx"}
CHUNK, SAMPLE_RATE = 512, 16000
# The --input-shape pins that make the model static (batch 1); `sr` is a rank-0 input.
INPUT_SHAPES = {"input": [1, CHUNK], "state": [2, 1, 128]}


def wheel_model_path(name: str) -> pathlib.Path:
    """The ONNX file inside the installed silero_vad package; refuses with the install line if absent."""
    if name not in VAD_FILES:
        raise ValueError(f"unknown VAD model {name!r}; known: {', '.join(VAD_FILES)}")
    return wheel_file("silero_vad", "data", VAD_FILES[name])


def audio_chunks(count: int, seed: int) -> np.ndarray:
    """(count, 1, CHUNK) float32 chunks: every other one voiced (a 90-260 Hz fundamental with decaying harmonics
    under a syllable-rate envelope, plus a little noise), the rest noise only."""
    rng = np.random.default_rng(seed)
    t = np.arange(CHUNK) / SAMPLE_RATE
    chunks = np.empty((count, 1, CHUNK), np.float32)
    for i in range(count):
        noise = rng.normal(0.0, rng.uniform(0.002, 0.02), CHUNK)
        if i % 2 == 0:
            f0 = rng.uniform(90, 260)
            voiced = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
            envelope = 0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, np.pi))
            chunks[i, 0] = rng.uniform(0.1, 0.4) * envelope * voiced + noise
        else:
            chunks[i, 0] = noise
    return chunks


def feeds(count: int, seed: int) -> dict[str, np.ndarray]:
    """Per-sample inputs (leading axis: samples) in effc's calibration format: chunks, a zero state, 16 kHz."""
    return {"input": audio_chunks(count, seed), "state": np.zeros((count, 2, 1, 128), np.float32),
            "sr": np.full((count,), SAMPLE_RATE, np.int64)}
