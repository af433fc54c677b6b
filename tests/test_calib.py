"""Calibration data: npz and folders, binding to model inputs, streaming batches, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from effc import CalibrationData, EffcError
from effc.ir import TensorSpec

IMG = TensorSpec("input", (1, 3, 4, 4), np.dtype("float32"))
DYN = TensorSpec("input", ("N", 3, 4, 4), np.dtype("float32"))


def test_npz_batches_for_fixed_batch_model(tmp_path):
    data = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "c.npz", input=data)
    calib = CalibrationData.load(tmp_path / "c.npz")
    batches = list(calib.batches([IMG]))
    assert len(batches) == 5 and batches[0]["input"].shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(batches[3]["input"][0], data[3])
    assert len(list(calib.batches([IMG], limit=2))) == 2


def test_samples_with_their_own_batch_axis(tmp_path):
    data = np.zeros((4, 1, 3, 4, 4), np.float32)
    batches = list(CalibrationData({"input": data}).batches([IMG]))
    assert len(batches) == 4 and batches[0]["input"].shape == (1, 3, 4, 4)


def test_dynamic_batch_streams_in_chunks():
    data = np.zeros((40, 3, 4, 4), np.float32)
    sizes = [b["input"].shape[0] for b in CalibrationData({"input": data}).batches([DYN])]
    assert sizes == [16, 16, 8]


def test_folder_of_npy_is_memory_mapped(tmp_path):
    np.save(tmp_path / "input.npy", np.ones((3, 3, 4, 4), np.float32))
    calib = CalibrationData.load(tmp_path)
    assert isinstance(calib.bind([IMG])["input"], np.memmap)
    assert calib.num_samples([IMG]) == 3


def test_unnamed_files_for_a_single_input_model(tmp_path):
    np.save(tmp_path / "part0.npy", np.ones((2, 3, 4, 4), np.float32))
    np.save(tmp_path / "part1.npy", np.zeros((3, 3, 4, 4), np.float32))
    assert CalibrationData.load(tmp_path).num_samples([IMG]) == 5


def test_float64_is_cast_to_the_input_dtype():
    batch = next(CalibrationData({"input": np.zeros((1, 3, 4, 4))}).batches([IMG]))
    assert batch["input"].dtype == np.float32


@pytest.mark.parametrize("arrays, message", [
    ({"other": np.zeros((2, 3, 4, 4), np.float32), "more": np.zeros((2, 2), np.float32)}, "no calibration data for input 'input'"),
    ({"input": np.zeros((2, 3, 5, 4), np.float32)}, "calibration samples have shape"),
    ({"input": np.zeros((2, 4), np.float32)}, "rank 4"),
    ({"input": np.zeros((2, 3, 4, 4), np.complex64)}, "is float32"),
])
def test_mismatches_are_named(arrays, message):
    with pytest.raises(EffcError, match=message):
        CalibrationData(arrays).bind([IMG, TensorSpec("more", (2,), np.dtype("float32"))] if "more" in arrays else [IMG])


def test_unreadable_sources(tmp_path):
    with pytest.raises(EffcError, match="no such calibration"):
        CalibrationData.load(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(EffcError, match="not a readable .npz"):
        CalibrationData.load(tmp_path / "junk.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EffcError, match="no .npy files"):
        CalibrationData.load(tmp_path / "empty")


def test_random_calibration_is_seeded():
    a = CalibrationData.random([IMG], 3, seed=1).bind([IMG])["input"]
    b = CalibrationData.random([IMG], 3, seed=1).bind([IMG])["input"]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 1, 3, 4, 4)
