"""The error contract under hostile input: exit 2 with one line and nothing written, never a traceback or exit 3."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from effc.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def model(tmp_path) -> str:
    x = helper.make_tensor_value_info("input", T.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", T.FLOAT, ["N", 3])
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["m"], name="mm"),
                               helper.make_node("Relu", ["m"], ["y"], name="relu")], "g", [x], [y], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def one_line_exit_2(result, *words):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_special_files_are_never_replaced(model):
    before = os.stat("/dev/full")
    one_line_exit_2(invoke("optimize", model, "-o", "/dev/full"), "/dev/full", "not a regular file")
    after = os.stat("/dev/full")
    assert after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


def test_unwritable_output_is_exit_2_without_reproducer(tmp_path, model):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    one_line_exit_2(invoke("optimize", model, "-o", blocker / "x.onnx"), str(blocker / "x.onnx"), "Not a directory")
    one_line_exit_2(invoke("compile", model, "--input-shape", "input=1,4", "-o", blocker / "x.effc"), "Not a directory")


def test_a_failing_report_leaves_no_model(tmp_path, model):
    (tmp_path / "ro").write_text("")  # a file where the report's folder should be
    out = tmp_path / "ok.onnx"
    one_line_exit_2(invoke("optimize", model, "-o", out, "--report", tmp_path / "ro" / "r.json"), "r.json")
    assert not out.exists()


@pytest.mark.parametrize("arrays, words", [
    ({"input": np.array([[np.nan, 0, 0, 0]], np.float32)}, ["NaN or Inf"]),
    ({"input": np.full((2, 4), np.inf, np.float32)}, ["NaN or Inf"]),
    ({"input": np.zeros((0, 4), np.float32)}, ["zero samples"]),
    ({"inptu": np.zeros((2, 4), np.float32)}, ["inptu", "match no input"]),
    ({"input": np.zeros((2, 4), np.float32), "extra": np.zeros((2, 4), np.float32)}, ["extra", "match no input"]),
    ({"input": np.zeros((2, 4), np.int64)}, ["int64"]),
])
def test_bad_calibration_and_inputs_are_refused_before_any_pass(tmp_path, model, arrays, words):
    data = tmp_path / "d.npz"
    np.savez(data, **arrays)
    out = tmp_path / "o.onnx"
    one_line_exit_2(invoke("optimize", model, "-o", out, "--passes", "int8", "--calib", data), *words)
    assert not out.exists()
    one_line_exit_2(invoke("verify", model, model, "--inputs", data), *words)


@pytest.mark.parametrize("args, words", [
    (["optimize", "{m}", "-o", "{o}", "--passes", "int8(exclude=3)", "--random-calib"], ["'3'", "exclude"]),
    (["optimize", "{m}", "-o", "{o}", "--passes", ""], ["empty pipeline"]),
    (["verify", "{m}", "{m}", "--atol", "-1"], ["--atol"]),
    (["verify", "{m}", "{m}", "--samples", "0"], ["--samples"]),
    (["tune", "{m}", "--trials", "0"], ["--trials"]),
    (["inspect", "{m}", "--input-shape", "input=1,4", "--input-shape", "input=2,4"], ["given twice"]),
    (["verify", "{m}", "{other}"], ["different inputs"]),
])
def test_bad_options_are_one_line(tmp_path, model, args, words):
    other = tmp_path / "other.onnx"
    proto = onnx.load(model)
    proto.graph.input[0].name = "x"
    proto.graph.node[0].input[0] = "x"
    onnx.save(proto, other)
    filled = [a.format(m=model, o=tmp_path / "o.onnx", other=other) for a in args]
    one_line_exit_2(invoke(*filled), *words)
    assert not (tmp_path / "o.onnx").exists()


def test_nan_outputs_are_never_within_tolerance(tmp_path):
    x = helper.make_tensor_value_info("x", T.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", T.FLOAT, [1, 4])
    ref = tmp_path / "ref.onnx"
    nan = tmp_path / "nan.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)]), ref)
    c = numpy_helper.from_array(np.full((1, 4), np.nan, np.float32), "c")
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "g", [x], [y], [c]),
                                opset_imports=[helper.make_opsetid("", 17)]), nan)
    result = invoke("verify", ref, nan)
    assert result.exit_code == 1 and "outside tolerance" in result.stdout


def test_json_failure_is_an_object_on_stdout(tmp_path, model):
    result = invoke("inspect", model, "--json", "--input-shape", "nope=1")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2 and "nope" in document["error"] and document["kind"] == "usage"


def test_internal_errors_keep_one_bounded_reproducer_folder(tmp_path, model, monkeypatch):
    from effc.cli import common
    from effc.pipeline import Pass, register_pass, unregister_pass

    monkeypatch.setattr(common, "crash_root", lambda: tmp_path / "crashes")
    monkeypatch.setattr(common, "COPY_MODEL_MAX_BYTES", 10)  # the model counts as large: referenced, not copied

    class Explodes(Pass):
        """Always fails."""

        name = "toy-explodes-contract"

        def run(self, model, ctx):
            raise RuntimeError("boom")

    register_pass(Explodes)
    try:
        for _ in range(common.CRASH_FOLDERS_KEPT + 2):
            result = invoke("optimize", model, "-o", tmp_path / "o.onnx", "--passes", "toy-explodes-contract")
            assert result.exit_code == 3 and "rm -r" in result.stderr
    finally:
        unregister_pass("toy-explodes-contract")
    folders = list((tmp_path / "crashes").iterdir())
    assert len(folders) == common.CRASH_FOLDERS_KEPT
    assert all((f / "model.txt").read_text().strip() == str(os.path.realpath(model)) for f in folders)
    assert not any(f.glob("*.onnx") for f in folders if list(f.glob("*.onnx")))


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: smaller than the digits model, so every write to it runs out of space. Needs root (mount)."""
    import shutil
    import subprocess

    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


DIGITS = os.path.join(os.path.dirname(__file__), "..", "effc", "zoo", "digits", "digits.onnx")


def assert_full_disk_refused(result, folder) -> None:
    assert result.exit_code == 2, result.output
    assert "No space left" in result.stderr or "no space left" in result.stderr
    assert "internal error" not in result.stderr and "reproducer" not in result.stderr
    assert os.listdir(folder) == []  # nothing half-written, no temporary left behind


def test_a_full_disk_is_an_input_error_that_leaves_nothing(full_disk):
    assert_full_disk_refused(invoke("optimize", DIGITS, "-o", full_disk / "d.onnx"), full_disk)
    assert_full_disk_refused(invoke("compile", DIGITS, "--target", "ort", "-o", full_disk / "d.ort"), full_disk)


@pytest.mark.tvm
def test_a_full_disk_during_a_tvm_compile_says_so(full_disk):
    result = invoke("compile", DIGITS, "--input-shape", "input=1,1,8,8", "-o", full_disk / "d.effc")
    assert_full_disk_refused(result, full_disk)
