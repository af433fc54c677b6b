"""The CUDA target on a machine without a GPU: kernels compiled by nvcc for the record's architecture and embedded,
ptxas accepts them, loading says clearly that a GPU is needed; with a GPU (marked `gpu`), outputs match ONNX Runtime."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

import effc
from effc.backends.tvm.cuda.build import fatbin_entries
from effc.cli import cli
from effc.onnx_runtime import compare_outputs, ort_session, run_session
from effc.zoo import get
from tests.conftest import zoo_params

SHAPES = {"digits": {"input": [1, 1, 8, 8]}, "resnet18": {"input": [1, 3, 224, 224]},
          "mobilenetv2": {"input": [1, 3, 224, 224]}, "encoder": {"input_ids": [1, 16]}, "ds_cnn": {"input": [1, 1, 49, 10]}}
NVCC = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA 13) is not installed")
GPU = pytest.mark.skipif(shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi"], capture_output=True).returncode,
                         reason="no NVIDIA GPU here")


def has_gpu() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    folder, cache = tmp_path_factory.mktemp("cuda"), {}

    def artifact(name: str, arch: str, precision: str = "fp32"):
        if (name, arch, precision) not in cache:
            out = folder / f"{name}.{arch}.{precision}.effc"
            shape = ",".join(map(str, next(iter(SHAPES[name].values()))))
            args = ["compile", str(get(name).onnx_path), "--target", "cuda", "--arch", arch, "--precision", precision,
                    "--input-shape", f"{next(iter(SHAPES[name]))}={shape}", "-o", str(out), "--json"]
            result = CliRunner().invoke(cli, args, catch_exceptions=False)
            assert result.exit_code == 0, result.output
            cache[name, arch, precision] = out
        return cache[name, arch, precision]

    return artifact


@NVCC
@pytest.mark.tvm
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", zoo_params())
def test_every_zoo_model_compiles_with_kernels_embedded_for_the_arch(compiled, name, arch):
    folder = compiled(name, arch)
    library = (folder / "model.so").read_bytes()
    assert ("elf", arch) in fatbin_entries(library)  # SASS for this architecture, no PTX to JIT
    assert b"__global__" not in library  # no CUDA source left to compile on load
    meta = json.loads((folder / "effc.json").read_text())
    assert meta["target"]["device"] == "cuda" and meta["target"]["cpu"] == arch
    assert meta["cuda"]["arch"] == arch and meta["cuda"]["min_driver"]


@NVCC
@pytest.mark.tvm
def test_fp16_artifact_embeds_half_kernels(compiled):
    folder = compiled("digits", "sm_90", "fp16")
    meta = json.loads((folder / "effc.json").read_text())
    assert meta["pipeline"] == "default,fp16" and ("elf", "sm_90") in fatbin_entries((folder / "model.so").read_bytes())
    with np.load(folder / "params.npz") as params:
        assert {params[k].dtype for k in params.files if params[k].ndim == 4} == {np.dtype(np.float16)}


@NVCC
@pytest.mark.tvm
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_ptxas_accepts_the_generated_kernels(tmp_path, arch):
    """The same module built in this process (no CUDA runtime: TVM keeps the source) goes through nvcc and ptxas."""
    import tvm

    from effc.backends.tvm.cuda import lowering
    from effc.backends.tvm.frontend import fold_constants, import_relax

    target = effc.get_target("cuda", arch)
    model = effc.optimize(effc.load_model(get("digits").onnx_path, SHAPES["digits"]), "default").model
    mod, params = import_relax(fold_constants(model))
    with target.tvm_target() as tvm_target:
        executable = tvm.compile(mod, target=tvm_target, relax_pipeline=lowering.relax_pipeline(target))
    modules = [m for top in executable.mod.imports for m in [top, *top.imports]]
    source = next(m for m in modules if m.kind == "cuda").inspect_source("cuda")
    (tmp_path / "k.cu").write_text(source)
    subprocess.run(["nvcc", "--ptx", f"-arch={arch}", "-o", str(tmp_path / "k.ptx"), str(tmp_path / "k.cu")], check=True)
    ptx = (tmp_path / "k.ptx").read_text()
    assert f".target {arch}" in ptx and ptx.count(".entry") >= 5
    subprocess.run(["ptxas", f"-arch={arch}", "-o", str(tmp_path / "k.cubin"), str(tmp_path / "k.ptx")], check=True)


@NVCC
@pytest.mark.tvm
def test_running_without_a_gpu_is_a_clear_error(compiled, tmp_path):
    if has_gpu():
        pytest.skip("this machine has a GPU")
    folder = compiled("digits", "sm_90")
    x = np.load(get("digits").eval_path)["input"][:1]
    np.save(tmp_path / "x.npy", x)
    for args in (["run", str(folder), "--input", f"input={tmp_path / 'x.npy'}"], ["profile", str(folder)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "runs on an NVIDIA GPU (sm_90)" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cuda_records_and_refusals():
    sm80 = effc.get_target("cuda", "sm_80")
    assert sm80.device == "cuda" and sm80.lowering == "cuda" and "bfloat16" in sm80.isa.float_types
    assert effc.get_target("cuda").cpu == "sm_90"
    with pytest.raises(effc.EffcError, match="unknown --arch 'sm_12'"):
        effc.get_target("cuda", "sm_12")
    result = CliRunner().invoke(cli, ["compile", str(get("digits").onnx_path), "--target", "x86", "--precision", "fp16",
                                      "--input-shape", "input=1,1,8,8"])
    assert result.exit_code == 2 and "has no float16 compute" in result.stderr


@pytest.mark.tvm
def test_tuning_for_cuda_without_a_gpu_is_refused_before_any_work(tmp_path):
    if has_gpu():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(cli, ["tune", str(get("digits").onnx_path), "--target", "cuda", "--trials", "4",
                                      "--input-shape", "input=1,1,8,8", "--db", str(tmp_path / "db")])
    assert result.exit_code == 2 and "none TVM can use" in result.stderr and not (tmp_path / "db").exists()


@GPU
@pytest.mark.gpu
@pytest.mark.tvm
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", zoo_params())
def test_gpu_outputs_match_onnx_runtime(compiled, name, precision):
    folder = compiled(name, _gpu_arch(), precision)
    artifact = effc.load_artifact(folder)
    spec = artifact.meta["inputs"][0]
    samples = np.load(get(name).eval_path)
    feeds = {spec["name"]: samples[spec["name"]][:1].astype(spec["dtype"])}
    reference = run_session(ort_session(str(get(name).onnx_path)), feeds)
    drift = compare_outputs([reference], [artifact(feeds)])
    if precision == "fp32":
        assert drift.max_abs <= 1e-3 * max(drift.scale, 1.0) and drift.top1_agreement in (None, 1.0), drift
    else:
        assert drift.cosine >= 0.999, drift


def _gpu_arch() -> str:
    import tvm

    return "sm_" + str(tvm.cuda(0).compute_version).replace(".", "")
