"""What `effc profile` feeds: --inputs, else the calibration data the artifact was built with, else random inputs
(and then it says when the artifact's int8 pass was calibrated on other data). ORT artifacts: no TVM build needed."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from effc.cli import cli
from effc.zoo import get

ZOO = get("digits")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile-inputs") / "digits.int8.effc"
    result = invoke("compile", ZOO.onnx_path, "--target", "ort", "--input-shape", "input=1,1,8,8", "--passes", "int8",
                    "--calib", ZOO.calib_path, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def profile(artifact, *extra):
    result = invoke("profile", artifact, "--repeat", "2", "--warmup", "0", "--compare-ort", ZOO.onnx_path, *extra)
    assert result.exit_code == 0, result.output
    return result


def profile_json(artifact, *extra):
    return json.loads(profile(artifact, "--json", *extra).output)


def test_profile_feeds_the_calibration_data_then_inputs_then_says_random_inputs_mislead(int8_artifact, tmp_path):
    meta = json.loads((int8_artifact / "effc.json").read_text())
    assert meta["calibration"] == {"path": str(ZOO.calib_path.resolve())}

    calibrated = profile_json(int8_artifact)
    assert calibrated["inputs"]["source"] == "calibration"
    assert calibrated["ort_max_abs_diff"] < 1.0  # int8 error on a real sample

    given = profile_json(int8_artifact, "--inputs", ZOO.eval_path)
    assert given["inputs"] == {"source": "file", "path": str(ZOO.eval_path), "calibrated": True}
    assert given["ort_max_abs_diff"] < 1.0

    moved = tmp_path / "moved.effc"  # the calibration file is not where effc.json says any more
    shutil.copytree(int8_artifact, moved)
    meta["calibration"]["path"] = str(tmp_path / "gone.npz")
    (moved / "effc.json").write_text(json.dumps(meta))
    random = profile_json(moved)
    assert random["inputs"] == {"source": "random", "path": str(tmp_path / "gone.npz"), "calibrated": True}
    assert random["ort_max_abs_diff"] > 10 * calibrated["ort_max_abs_diff"]  # far outside the calibration range
    line = " ".join(profile(moved).output.split())  # rich wraps long lines
    assert "on random inputs, not the data its int8 pass was calibrated on" in line and "--inputs DATA.npz" in line

    del meta["calibration"]  # an artifact from before effc.json recorded it: its pipeline still says int8
    (moved / "effc.json").write_text(json.dumps(meta))
    assert profile_json(moved)["inputs"] == {"source": "random", "path": None, "calibrated": True}


def test_artifacts_without_int8_say_only_random_inputs(tmp_path):
    out = tmp_path / "digits.ort.effc"
    assert invoke("compile", ZOO.onnx_path, "--target", "ort", "--input-shape", "input=1,1,8,8", "-o", out).exit_code == 0
    assert json.loads((out / "effc.json").read_text())["calibration"] is None
    assert profile_json(out)["inputs"] == {"source": "random", "path": None, "calibrated": False}
    text = " ".join(profile(out).output.split())
    assert "on random inputs" in text and "calibrated" not in text


def test_profile_inputs_that_do_not_fit_are_one_line_errors(int8_artifact, tmp_path):
    result = CliRunner().invoke(cli, ["profile", str(int8_artifact), "--inputs", str(tmp_path / "nope.npz")])
    assert result.exit_code == 2 and "nope.npz" in result.output
