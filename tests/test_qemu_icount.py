"""Instructions counted under qemu-aarch64 by effc's plugin: exact on a known loop, between the guest's marks only,
and per call of an ARM artifact (float against int8)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

import effc
from effc.calib import CalibrationData
from effc.cli import cli
from effc.pipeline.context import Context
from effc.runners import qemu_icount
from effc.runners.vm_runner import COUNT_MARK
from effc.zoo import get

LOOP = r"""
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    lseek(-1, %#x, SEEK_SET);
    for (long i = 0; i < n; i++) __asm__ volatile("nop; nop; nop");
    lseek(-1, %#x, SEEK_SET);
    for (long i = 0; i < 1000; i++) __asm__ volatile("nop");
    return 0;
}
""" % (COUNT_MARK, COUNT_MARK)


def _loop_counts(tmp_path, iterations: int) -> list[int]:
    out = tmp_path / f"marks{iterations}"
    subprocess.run(qemu_icount.counting(["qemu-aarch64"], out) + [str(tmp_path / "loop"), str(iterations)], check=True)
    return qemu_icount.read_marks(out)


def test_the_plugin_counts_a_known_loop_exactly_between_marks(tmp_path):
    (tmp_path / "loop.c").write_text(LOOP)
    subprocess.run(["aarch64-linux-gnu-gcc", "-O1", "-static", "-o", str(tmp_path / "loop"), str(tmp_path / "loop.c")],
                   check=True)
    small, large = (_loop_counts(tmp_path, n) for n in (1000, 11000))
    assert len(small) == len(large) == 2
    inside = [end - start for start, end in (small, large)]
    per_iteration = (inside[1] - inside[0]) / 10000
    assert per_iteration == int(per_iteration) and 4 <= per_iteration <= 8  # 3 nops, the increment, compare, branch
    assert inside[0] < 1000 * 8 + 100  # the code after the second mark (and before the first) is not counted


def test_marks_outside_qemu_are_harmless():
    from effc.runners.vm_runner import mark_instruction_count

    mark_instruction_count()


@pytest.mark.tvm
def test_arm_artifacts_count_instructions_per_call_and_int8_with_sdot_executes_fewer(tmp_path):
    """digits on cortex-a76 (dotprod): the count of each call is the same to 2% from call to call, and the int8
    artifact (sdot convolutions, integer matmuls) executes fewer instructions than the float one (measured: 1.9x)."""
    z = get("digits")
    image = np.load(z.eval_path)["input"][:1].astype(np.float32)
    counts = {}
    for pipeline in ("default", "default,int8"):
        artifact = effc.compile(z.onnx_path, "arm", cpu="cortex-a76", pipeline=pipeline, out=tmp_path / f"{len(pipeline)}.effc",
                                ctx=Context(calibration=CalibrationData.load(z.calib_path)), input_shapes={"input": [1, 1, 8, 8]})
        calls = artifact.runner.instructions_per_run([image], runs=3)
        assert len(calls) == 3 and max(calls) <= min(calls) * 1.02 and min(calls) > 10_000
        counts[pipeline] = float(np.median(calls))
    assert counts["default,int8"] < counts["default"]
    int8_artifact = str(tmp_path / f"{len('default,int8')}.effc")
    shown = CliRunner().invoke(cli, ["profile", int8_artifact, "--repeat", "2"])
    assert shown.exit_code == 0, shown.output
    assert "instructions per call on qemu-aarch64" in shown.output
    as_json = CliRunner().invoke(cli, ["profile", int8_artifact, "--repeat", "2", "--json"])
    profiled = json.loads(as_json.output)["instructions_per_call"]
    assert abs(profiled - counts["default,int8"]) <= 0.02 * counts["default,int8"]
