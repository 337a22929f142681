"""The ReActor model generator's bookkeeping: when its cache is reused, and whether its files are the real sizes.

The generation itself needs onnx, torch and transformers (ComfyUI's Python) and runs in the integration suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reactor_models import GENERATOR_VERSION, MARKER, REAL_SIZES, SIZE_TOLERANCE, read_marker, size_mismatches


def test_a_marker_of_this_version_is_read(tmp_path: Path) -> None:
    marker = {"version": GENERATOR_VERSION, "seconds": 21.5, "sizes": {}}
    (tmp_path / MARKER).write_text(json.dumps(marker))
    assert read_marker(tmp_path) == marker


@pytest.mark.parametrize(
    "text",
    [
        None,  # never written: a generation cut short writes it last
        '{"version": ',  # cut short by hand
        "\udcff",  # not text
        "[1, 2]",  # JSON, but no object
        json.dumps({"version": GENERATOR_VERSION - 1, "seconds": 20.0}),  # another generator's
        json.dumps({"seconds": 20.0}),
    ],
)
def test_a_missing_corrupt_or_older_marker_means_the_models_are_made_again(tmp_path: Path, text: str | None) -> None:
    if text is not None:
        (tmp_path / MARKER).write_bytes(text.encode("utf-8", "surrogateescape"))
    assert read_marker(tmp_path) is None


def real_layout() -> dict[str, int]:
    return {f"some/folder/{name}": size for name, size in REAL_SIZES.items()}


def test_files_of_the_real_sizes_match() -> None:
    assert size_mismatches(real_layout()) == []


def test_a_file_too_small_or_too_large_or_missing_is_named() -> None:
    sizes = real_layout()
    real = REAL_SIZES["genderage.onnx"]
    sizes["some/folder/genderage.onnx"] = int(real * (1 - 2 * SIZE_TOLERANCE))
    sizes["some/folder/model.safetensors"] = int(REAL_SIZES["model.safetensors"] * (1 + 2 * SIZE_TOLERANCE))
    del sizes["some/folder/det_10g.onnx"]
    mismatches = size_mismatches(sizes)
    assert len(mismatches) == 3
    assert mismatches[0] == "det_10g.onnx: not generated"
    assert mismatches[1].startswith("genderage.onnx:") and mismatches[1].endswith("(-4.0%)")
    assert mismatches[2].startswith("model.safetensors:") and mismatches[2].endswith("(+4.0%)")
