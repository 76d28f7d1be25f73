"""The GPU benchmark runs end to end at a tiny shape on the CPU (`--tiny`), so the script a GPU session runs works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each benchmark runs end to end on the CPU: with -m slow in .ci/run's second stage

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_gpu_runs_tiny_on_the_cpu(tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "bench_gpu.py"), "--tiny", "--json", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "r.json").read_text())
    assert not [key for key in results if key.endswith("/error")], results  # a failed part is reported, not raised
    for key in ("pairs/bfloat16/eager", "video/bfloat16/eager", "pairs/float32/eager", "video/float32/eager"):
        assert results[key]["pairs_per_s"] > 0 and results[key]["gflop_per_pair"] > 0
    # each frame through the backbone once: fewer FLOPs per pair in video mode
    assert results["video/float32/eager"]["gflop_per_pair"] < results["pairs/float32/eager"]["gflop_per_pair"]
    assert results["extract"]["pairs"] == 2 * 11 and results["extract"]["pairs_per_s"] > 0
    if "parity/fp32_codes_equal" in results:  # the golden checkpoint is in ../shared (CI has it)
        assert results["parity/fp32_codes_equal"] is True and results["parity/fp32_codes_equal_reference"] is True
    if "parity/extract_rows_equal" in results:  # the ALOHA videos are in ../shared too
        assert results["parity/extract_rows_equal"] is True and results["parity/extract_code_agreement"] == 1.0
        assert results["parity/resize_max_difference"] <= 1


def test_bench_gpu_breakdown_runs_tiny_on_the_cpu(tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "bench_gpu_breakdown.py"), "--tiny", "--runs", "1", "--rounds", "1",
                             "--json", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["time/backbone"] > 0 and results["time/laq"] > 0 and "aten::" in results["profile"]
    kinds = ("position_generator", "temporal_attention", "feed_forward", "combined")
    forms = {key: value for key, value in results.items() if key.split("/")[0] in kinds}
    assert len(forms) == 8
    # every form computes the same function: on the tiny model (bf16) they give the same codes
    assert all(value["code_agreement"] == 1.0 for value in forms.values()), forms


def test_bench_entry_points_runs_tiny(tmp_path):
    """Every way in (extract, label_video, label_pairs, the app, the endpoint handler) on one short video: the
    benchmark itself asserts that they give extract's codes."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "bench_entry_points.py"), "--tiny", "--frames", "10",
                             "--batch-size", "4", "--rounds", "1", "--json", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "r.json").read_text())
    ways = results["pairs_per_s"]
    assert set(ways) == set(results["same_codes"]) == {"extract", "label_video", "label_pairs", "app", "handler"}
    assert all(results["same_codes"].values()) and results["frames"] == 10
    assert all(way["median"] > 0 for way in ways.values()) and ways["extract"]["of_extract"] == 1.0
