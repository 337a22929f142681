"""Generates the model files the real ReActor (ComfyUI-ReActor v0.7) reads, so its nodes run here without downloads.

A test helper, never package code, and never committed: the files are written into a cache folder at test time.
Run it with a Python that has ``numpy``, ``onnx``, ``torch`` and ``transformers`` (ComfyUI's, with ReActor's
requirements): ``python -m tests.reactor_models <models folder>``. The folder is laid out as ComfyUI's
``models_dir``, where ReActor looks (``--base-directory`` moves it):

- ``insightface/inswapper_128.onnx``: inputs ``target`` 1x3x128x128 and ``source`` 1x512, output ``output``
  1x3x128x128 (here: the aligned face with its colours inverted, so that a swap visibly changes the image); the
  ``emap`` matrix is the graph's last initializer, as ``reactor_core.inswap.INSwapper`` reads it.
- ``insightface/models/buffalo_l/``: ``det_10g`` (SCRFD: nine outputs, three strides of two anchors, with
  keypoints), ``w600k_r50`` (a 512-long embedding), ``genderage`` (3 values), ``2d106det`` (212) and ``1k3d68``
  (3309), with the input names and sizes ``reactor_core.inswap`` reads.
- ``nsfw_detector/vit-base-nsfw-detector/``: a transformers ViT classifier saved locally, as ReActor's safe-content
  check (``scripts/reactor_sfw.py``) loads it; its classifier always answers ``sfw``.
- ``facerestore_models/``: empty placeholders, so the node's ``INPUT_TYPES`` finds some and downloads none.

The detector finds exactly one face, in the middle of any image that is not dark (its score rises with the image's
mean brightness), and none in a black image, so both a swap and ReActor's "no face" path can be run. Each file is
as large as the real one (within ``SIZE_TOLERANCE``: :func:`size_mismatches`): the weights that give it its size
are random and used by the graph (onnxruntime drops an initializer no node reads), multiplied by zero where they
meet the result, so the memory ReActor's sessions take is what users see, and the results stay exact.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 2
MARKER = "generated.json"
SIZE_TOLERANCE = 0.02  # each generated file is within 2% of the real one's size

# The real files' sizes in bytes, keyed by file name: buffalo_l.zip of insightface 0.7 and inswapper_128.onnx;
# AdamCodd/vit-base-nsfw-detector's model.safetensors, which the Hub lists as 344 MB: google/vit-base-patch16-384
# with two labels, 86,092,034 float32 parameters (344,368,136 bytes) and a header of a few kilobytes. Its exact
# byte count is not recorded here; the figure below is those parameters and a 20 kB header.
REAL_SIZES = {
    "inswapper_128.onnx": 554_253_681,
    "det_10g.onnx": 16_923_827,
    "w600k_r50.onnx": 174_383_860,
    "genderage.onnx": 1_322_532,
    "2d106det.onnx": 5_030_888,
    "1k3d68.onnx": 143_607_619,
    "model.safetensors": 344_388_136,
}
SWAPPER = Path("insightface") / "inswapper_128.onnx"
BUFFALO = Path("insightface") / "models" / "buffalo_l"
NSFW = Path("nsfw_detector") / "vit-base-nsfw-detector"
FACE_RESTORE = Path("facerestore_models")
RESTORE_PLACEHOLDERS = ("GPEN-BFR-512.onnx", "GFPGANv1.4.pth")

DETECTOR_STRIDES = (8, 16, 32)
DETECTOR_SIZE = 640  # ReActor's det_size
ANCHORS = 2
FACE_HALF_SIDE = 100.0  # the face found spans 200 x 200 of the detector's 640 x 640 input
# ArcFace's five reference points in its 112 x 112 crop (reactor_core.inswap.ARCFACE_STD_POINTS).
ARCFACE_POINTS = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))


class _Builder:
    """One ONNX graph: nodes, initializers and a padding matrix that gives the file its real size."""

    def __init__(self, name: str, seed: int):
        import numpy as np  # ComfyUI's Python has them; the unit suite's need not
        import onnx
        from onnx import helper, numpy_helper

        self.np, self.onnx, self.helper, self.numpy_helper = np, onnx, helper, numpy_helper
        self.name = name
        self.rng = self.np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.counter = 0
        self.widths: dict[str, int] = {}  # the length of each 1 x K vector made for zero_from

    def const(self, value: Any, name: str | None = None) -> str:
        self.counter += 1
        name = name or f"c{self.counter}"
        array = self.np.asarray(value)
        if array.dtype == self.np.float64:
            array = array.astype(self.np.float32)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def op(self, kind: str, inputs: list[str], output: str | None = None, **attributes: Any) -> str:
        self.counter += 1
        output = output or f"t{self.counter}"
        self.nodes.append(self.helper.make_node(kind, inputs, [output], **attributes))
        return output

    def zero_from(self, vector: str, target_bytes: int, reserved_bytes: int = 0) -> str:
        """A scalar 0 computed from ``vector`` (1 x K) times random weights: the file's real size, used.

        A K x N matrix takes the bulk; what is left of the size (less than one column of K floats, which is 8% of
        ``genderage``) goes into a 1 x M row multiplied by the vector's mean, so the file is the real size to a
        few bytes whatever K is.
        """
        width = self.widths[vector]
        budget = max(target_bytes - reserved_bytes, 4 * width)
        columns = budget // 4 // width
        matrix = self.rng.random((width, columns), dtype=self.np.float32)
        total = self.op("ReduceSum", [self.op("MatMul", [vector, self.const(matrix)])], keepdims=0)
        rest = (budget - 4 * width * columns) // 4
        if rest:
            mean = self.op("ReduceMean", [vector], axes=[1], keepdims=1)
            row = self.rng.random((1, rest), dtype=self.np.float32)
            tail = self.op("ReduceSum", [self.op("MatMul", [mean, self.const(row)])], keepdims=0)
            total = self.op("Add", [total, tail])
        return self.op("Mul", [total, self.const(self.np.float32(0.0))])

    def flat(self, tensor: str, elements: int) -> str:
        flat = self.op("Reshape", [tensor, self.const(self.np.array([1, -1], dtype=self.np.int64))])
        self.widths[flat] = elements
        return flat

    def save(self, path: Path, inputs: list[Any], outputs: list[Any], last: Any | None = None) -> None:
        initializers = [*self.initializers, *([] if last is None else [last])]
        graph = self.helper.make_graph(self.nodes, self.name, inputs, outputs, initializer=initializers)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", 13)])
        model.ir_version = 8
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".partial")
        temporary.write_bytes(model.SerializeToString())
        temporary.replace(path)


def _tensor(builder: _Builder, name: str, shape: list[Any]) -> Any:
    return builder.helper.make_tensor_value_info(name, builder.onnx.TensorProto.FLOAT, shape)


def _constant_output(name: str, file: str, input_name: str, side: int, values: Any, output: str, seed: int) -> Any:
    """A face model of ``buffalo_l`` whose answer is ``values`` (1 x N) plus a zero computed from its input."""
    builder = _Builder(name, seed)
    elements = 3 * side * side
    zero = builder.zero_from(builder.flat(input_name, elements), REAL_SIZES[file], values.size * 4)
    builder.op("Add", [builder.const(values.reshape(1, -1)), zero], output)
    return builder, [_tensor(builder, input_name, [1, 3, side, side])], [_tensor(builder, output, [1, values.size])]


def write_detector(path: Path) -> None:
    """SCRFD as ``reactor_core.inswap.SCRFD`` reads it: scores, boxes and keypoints for strides 8, 16 and 32.

    One anchor (the middle of the 640 x 640 input, stride 8) scores ``sigmoid(10 tanh(10 (mean + 0.5)))`` of the
    input's mean (-1 for black, 1 for white): above ReActor's 0.5 for any image brighter than a quarter grey, about
    0 for black; every other anchor scores under ``sigmoid(-10)``.
    """
    builder = _Builder("det_10g", 10)
    np = builder.np
    mean = builder.op("ReduceMean", ["input.1"], axes=[1, 2, 3], keepdims=0)
    shifted = builder.op("Add", [mean, builder.const(np.float32(0.5))])
    steep = builder.op("Tanh", [builder.op("Mul", [shifted, builder.const(np.float32(10.0))])])
    gate = builder.op("Mul", [steep, builder.const(np.float32(10.0))])
    pooled = builder.op("ReduceMean", ["input.1"], axes=[2, 3], keepdims=0)
    builder.widths[pooled] = 3
    counts = [(DETECTOR_SIZE // stride) ** 2 * ANCHORS for stride in DETECTOR_STRIDES]
    small = sum(counts) * (1 + 4 + 10) * 4
    zero = builder.zero_from(pooled, REAL_SIZES["det_10g.onnx"], small)
    live = builder.op("Add", [gate, zero])
    middle = DETECTOR_SIZE // DETECTOR_STRIDES[0] // 2
    face = (middle * (DETECTOR_SIZE // DETECTOR_STRIDES[0]) + middle) * ANCHORS
    stride = float(DETECTOR_STRIDES[0])
    crop = FACE_HALF_SIDE * 2 / 112.0
    keypoints = [
        coordinate for point in ARCFACE_POINTS for coordinate in ((point[0] - 56) * crop, (point[1] - 56) * crop)
    ]
    names = ([], [], [])
    for index, count in enumerate(counts):
        scores = np.full((count, 1), -20.0, dtype=np.float32)
        boxes = np.ones((count, 4), dtype=np.float32)
        points = np.zeros((count, 10), dtype=np.float32)
        if index == 0:
            scores[face, 0] = 0.0
            boxes[face] = FACE_HALF_SIDE / stride
            points[face] = np.array(keypoints, dtype=np.float32) / stride
        names[0].append(builder.op("Sigmoid", [builder.op("Add", [builder.const(scores), live])], f"score_{index}"))
        names[1].append(builder.op("Add", [builder.const(boxes), zero], f"bbox_{index}"))
        names[2].append(builder.op("Add", [builder.const(points), zero], f"kps_{index}"))
    widths = (1, 4, 10)
    outputs = [
        _tensor(builder, name, [count, widths[group]])
        for group in range(3)
        for name, count in zip(names[group], counts, strict=True)
    ]
    builder.save(path, [_tensor(builder, "input.1", [1, 3, "height", "width"])], outputs)


def write_swapper(path: Path) -> None:
    """inswapper_128 as ``INSwapper`` reads it: ``emap`` last; the output is ``1 - target`` (inverted colours)."""
    builder = _Builder("inswapper_128", 128)
    np = builder.np
    emap_bytes = 512 * 512 * 4
    zero = builder.zero_from(builder.flat("target", 3 * 128 * 128), REAL_SIZES["inswapper_128.onnx"], emap_bytes)
    source = builder.op("Mul", [builder.op("ReduceSum", ["source"], keepdims=0), builder.const(np.float32(0.0))])
    inverted = builder.op("Sub", [builder.const(np.float32(1.0)), "target"])
    builder.op("Add", [builder.op("Add", [inverted, zero]), source], "output")
    emap = builder.numpy_helper.from_array(np.eye(512, dtype=np.float32), "emap")
    inputs = [_tensor(builder, "target", [1, 3, 128, 128]), _tensor(builder, "source", [1, 512])]
    builder.save(path, inputs, [_tensor(builder, "output", [1, 3, 128, 128])], last=emap)


def write_analysis(folder: Path) -> None:
    """The four other ``buffalo_l`` models: recognition, gender and age, 2D and 3D landmarks."""
    import numpy as np

    from_mean = np.random.default_rng(600).standard_normal(512).astype(np.float32)
    angles = np.linspace(0, 2 * np.pi, 106, endpoint=False)
    ring = np.stack([0.5 * np.cos(angles), 0.5 * np.sin(angles)], axis=1).astype(np.float32)
    mesh = np.zeros((1103, 3), dtype=np.float32)
    mesh[-68:, 0] = np.cos(np.linspace(0, 2 * np.pi, 68)) * 0.5
    mesh[-68:, 1] = np.sin(np.linspace(0, 2 * np.pi, 68)) * 0.5
    mesh[-68:, 2] = np.linspace(-0.2, 0.2, 68)
    models = (
        ("w600k_r50", "input.1", 112, from_mean, "683"),
        ("genderage", "data", 96, np.array([0.2, 0.8, 0.3], dtype=np.float32), "fc1"),
        ("2d106det", "data", 192, ring.reshape(-1), "fc1"),
        ("1k3d68", "data", 192, mesh.reshape(-1), "fc1"),
    )
    for seed, (name, input_name, side, values, output) in enumerate(models):
        builder, inputs, outputs = _constant_output(name, f"{name}.onnx", input_name, side, values, output, seed)
        builder.save(folder / f"{name}.onnx", inputs, outputs)


def write_safe_content_classifier(folder: Path) -> None:
    """A ViT-base image classifier at 384 pixels (AdamCodd/vit-base-nsfw-detector's shape), answering ``sfw``."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=384, num_labels=2, id2label={0: "sfw", 1: "nsfw"}, label2id={"sfw": 0, "nsfw": 1})
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([8.0, -8.0]))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    ViTImageProcessor(size={"height": 384, "width": 384}).save_pretrained(folder)


def generate(models: Path) -> dict[str, int]:
    """Writes every file under ``models``; returns each file's size in bytes, keyed by its path under it."""
    started = time.monotonic()
    write_swapper(models / SWAPPER)
    write_detector(models / BUFFALO / "det_10g.onnx")
    write_analysis(models / BUFFALO)
    write_safe_content_classifier(models / NSFW)
    (models / FACE_RESTORE).mkdir(parents=True, exist_ok=True)
    for name in RESTORE_PLACEHOLDERS:
        (models / FACE_RESTORE / name).touch()
    sizes = {str(path.relative_to(models)): path.stat().st_size for path in sorted(models.rglob("*")) if path.is_file()}
    sizes.pop(MARKER, None)
    marker = {"version": GENERATOR_VERSION, "seconds": round(time.monotonic() - started, 1), "sizes": sizes}
    temporary = models / f"{MARKER}.partial"
    temporary.write_text(json.dumps(marker, indent=1))
    temporary.replace(models / MARKER)
    return sizes


def read_marker(models: Path) -> dict[str, Any] | None:
    """What the generation into ``models`` recorded (its version, seconds and sizes), or ``None`` to make them again.

    ``None`` when the marker is missing, unreadable, not JSON or not an object (a file edited or cut short by hand:
    it is written last, and atomically, so an interrupted generation leaves none), or from another version.
    """
    try:
        marker = json.loads((models / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: json.JSONDecodeError and UnicodeDecodeError
        return None
    if not isinstance(marker, dict) or marker.get("version") != GENERATOR_VERSION:
        return None
    return marker


def size_mismatches(sizes: dict[str, int]) -> list[str]:
    """Each real file whose generated one (``sizes``: bytes by path) is missing or not within ``SIZE_TOLERANCE``."""
    by_name = {Path(path).name: size for path, size in sizes.items()}
    mismatches = []
    for name, real in REAL_SIZES.items():
        generated = by_name.get(name)
        if generated is None:
            mismatches.append(f"{name}: not generated")
        elif abs(generated - real) > SIZE_TOLERANCE * real:
            mismatches.append(f"{name}: {generated:,} bytes, the real one {real:,} ({generated / real - 1:+.1%})")
    return mismatches


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m tests.reactor_models <models folder>\n")
        return 2
    generate(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
