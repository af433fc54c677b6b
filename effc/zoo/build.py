"""Builds zoo models with torch: `python -m effc.zoo.build [names...] [--force]`.

digits is retrained and rewritten in place (effc/zoo/digits/, shipped in git); the others go to the cache.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time
import warnings

import numpy as np

from effc import zoo
from effc.zoo.data import random_token_ids, synthetic_images

OPSET = 17
SEED = 0
IMAGE_SAMPLES = 32
TOKEN_SAMPLES, TOKEN_SEQ = 32, 16
CALIB_SEED, EVAL_SEED = 1, 2


def build_model(name: str, target: zoo.ZooModel) -> None:
    """Write `name`'s ONNX file and sample data to target's paths, each atomically."""
    target.onnx_path.parent.mkdir(parents=True, exist_ok=True)
    {"digits": _build_digits, "resnet18": _build_resnet18,
     "mobilenetv2": _build_mobilenetv2, "encoder": _build_encoder, "ds_cnn": _build_ds_cnn}[name](target)


def _build_digits(target: zoo.ZooModel) -> None:
    import torch

    from effc.zoo.digits_cnn import accuracy, load_split, train

    torch.manual_seed(SEED)
    split = load_split()
    model = train(split, seed=SEED)
    test_accuracy = accuracy(model, split.test_x, split.test_y)
    if test_accuracy < 0.97:
        raise RuntimeError(f"digits: held-out accuracy {test_accuracy:.4f} < 0.97")
    _save_npz(target.calib_path, input=split.calib_x)
    _save_npz(target.eval_path, input=split.test_x, labels=split.test_y)
    _export(model, torch.from_numpy(split.test_x[:2]), target.onnx_path, "input", "logits",
            {"input": {0: "N"}, "logits": {0: "N"}})


def _build_ds_cnn(target: zoo.ZooModel) -> None:
    import torch

    from effc.zoo.digits_cnn import accuracy
    from effc.zoo.ds_cnn import CALIB_SIZE, EVAL_SIZE, keyword_samples, train

    model = train(seed=SEED)
    calib, _ = keyword_samples(CALIB_SIZE, CALIB_SEED)
    evaluation, labels = keyword_samples(EVAL_SIZE, EVAL_SEED)
    eval_accuracy = accuracy(model, evaluation, labels)
    if eval_accuracy < 0.9:
        raise RuntimeError(f"ds_cnn: held-out accuracy {eval_accuracy:.4f} < 0.9 on the synthetic keyword task")
    _save_npz(target.calib_path, input=calib)
    _save_npz(target.eval_path, input=evaluation, labels=labels)
    _export(model, torch.from_numpy(calib[:2]), target.onnx_path, "input", "logits",
            {"input": {0: "N"}, "logits": {0: "N"}})


def _build_resnet18(target: zoo.ZooModel) -> None:
    from effc.zoo.resnet import ResNet18

    _build_image_classifier(ResNet18, target)


def _build_mobilenetv2(target: zoo.ZooModel) -> None:
    from effc.zoo.mobilenet import MobileNetV2

    _build_image_classifier(MobileNetV2, target)


def _build_image_classifier(model_class, target: zoo.ZooModel) -> None:
    import torch

    torch.manual_seed(SEED)
    model = model_class()
    calib = synthetic_images(IMAGE_SAMPLES, CALIB_SEED)
    evaluation = synthetic_images(IMAGE_SAMPLES, EVAL_SEED)
    _set_realistic_batchnorm(model, torch.from_numpy(calib), seed=SEED)
    with torch.no_grad():
        top1 = model(torch.from_numpy(evaluation)).argmax(1)
    if len(top1.unique()) < 2:
        raise RuntimeError(f"{target.name}: degenerate logits, every eval image has top-1 class {int(top1[0])}")
    _save_npz(target.calib_path, input=calib)
    _save_npz(target.eval_path, input=evaluation)
    _export(model, torch.from_numpy(calib[:1]), target.onnx_path, "input", "logits")


def _set_realistic_batchnorm(model, images, seed: int, batch_size: int = 8) -> None:
    """Spread BN affine parameters (so channel importance varies) and accumulate running stats over `images`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.weight.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
            norm.bias.copy_(torch.randn(norm.num_features, generator=generator) * 0.1)
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over all batches
        model.train()
        for batch in images.split(batch_size):
            model(batch)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def _build_encoder(target: zoo.ZooModel) -> None:
    import torch

    from effc.zoo.encoder import VOCAB_SIZE, Encoder

    torch.manual_seed(SEED)
    model = Encoder().eval()
    calib = random_token_ids(TOKEN_SAMPLES, TOKEN_SEQ, VOCAB_SIZE, CALIB_SEED)
    evaluation = random_token_ids(TOKEN_SAMPLES, TOKEN_SEQ, VOCAB_SIZE, EVAL_SEED)
    _save_npz(target.calib_path, input_ids=calib)
    _save_npz(target.eval_path, input_ids=evaluation)
    _export(model, torch.from_numpy(calib[:2]), target.onnx_path, "input_ids", "hidden",
            {"input_ids": {0: "batch", 1: "seq"}, "hidden": {0: "batch", 1: "seq"}})


def _export(model, example, path: pathlib.Path, input_name: str, output_name: str, dynamic_axes=None) -> None:
    """TorchScript export, unfolded: no constant folding, so BatchNormalization and shape arithmetic stay in the graph."""
    import onnx
    import torch

    model.eval()
    with _temporary_sibling(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes=dynamic_axes, do_constant_folding=False)
        exported = onnx.load(str(tmp))
        names = [node.name for node in exported.graph.node]
        if "" in names or len(set(names)) != len(names):
            raise RuntimeError(f"{path.name}: exporter produced empty or duplicate node names")
        onnx.checker.check_model(str(tmp), full_check=True)


class _temporary_sibling:
    """A temp path next to `path` that replaces it on success (so readers never see a partial file)."""

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)

    def __enter__(self) -> pathlib.Path:
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        os.close(fd)
        self.tmp = pathlib.Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.chmod(self.tmp, 0o644)  # mkstemp creates 0600
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _save_npz(path: pathlib.Path, **arrays: np.ndarray) -> None:
    with _temporary_sibling(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effc.zoo.build", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="name", help=f"models to build (default: all): {', '.join(zoo.ZOO_NAMES)}")
    parser.add_argument("--force", action="store_true", help="rebuild cached models even if present")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(zoo.ZOO_NAMES))
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}")
    for name in args.names or zoo.ZOO_NAMES:
        start = time.perf_counter()
        if name == "digits":
            model = zoo.model_files("digits", zoo.SHIPPED_DIR)
            build_model("digits", model)
        else:
            model = zoo.ensure_built(name, force=args.force)
        size = model.onnx_path.stat().st_size
        print(f"{name}: {model.onnx_path} ({size:,} bytes) in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
