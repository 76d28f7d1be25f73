"""`lary extract` in one process: LARY pair, clip and regression configs, videos, image folders, encoder features,
unreadable clips and the run record. Multi-process and kill/resume runs are in test_extract_processes.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from lary_tree import make_lary_tree
from transformers import AutoModel, BitImageProcessorPil, Dinov2Config, DINOv3ViTModel

from lary import LapaDinov3Config, LapaDinov3Model, LapaDinov3Processor
from lary.cli import main as lary_main
from lary.data.loading import load_lary_split
from lary.data.prepare import prepare
from lary.encoders import encode_frame_pairs
from lary.evaluation.features import load_split

TINY_BACKBONE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "num_register_tokens": 4, "image_size": 224, "patch_size": 16}
TINY_LAQ = dict(quant_dim=8, codebook_size=8, code_seq_len=16, spatial_depth=1, temporal_depth=1, decoder_depth=1,
                dim_head=16, heads=2)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
LATENT_COLUMNS = ["action_indices", "latent_actions", "continuous_latent_actions"]


def save_tiny_model(folder: Path) -> Path:
    torch.manual_seed(0)
    LapaDinov3Model(LapaDinov3Config(backbone_config=TINY_BACKBONE, **TINY_LAQ)).eval().save_pretrained(folder)
    return folder


def prepare_lary(root: Path, configs: dict[str, int]) -> Path:
    """A miniature LARY tree (synthetic rows in the LARY layouts) made into Parquet by `lary prepare`'s code."""
    data_dir, metadata_dir = make_lary_tree(root / "tree", None, configs)
    prepare(data_dir, metadata_dir, root / "prepared", configs=list(configs))
    return root / "prepared"


def read_output(outdir: Path) -> pa.Table:
    """Every Parquet shard of an extract folder, rows sorted by `id` (and `frame_index`, one row per pair)."""
    table = pa.concat_tables([pq.read_table(path) for path in sorted(outdir.glob("*.parquet"))])
    return table.sort_by([("id", "ascending")] + ([("frame_index", "ascending")] if "frame_index" in table.column_names else []))


def read_manifest(outdir: Path) -> dict:
    return json.loads((outdir / "manifest.json").read_text())


def extract(*args: str) -> int:
    return lary_main(["extract", *args, "--cpu"])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def lary_folder(tmp_path_factory) -> Path:
    return prepare_lary(tmp_path_factory.mktemp("lary"), {"libero": 10, "robot_1st": 3, "calvin": 5})


@pytest.fixture(scope="module")
def model(tiny_model) -> LapaDinov3Model:
    return AutoModel.from_pretrained(tiny_model).eval()


def test_pairs_match_the_model_and_pass_labels_through(tmp_path, tiny_model, lary_folder, model):
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--dataset", str(lary_folder), "--dataset-config", "libero",
                   "--split", "validation", "--out", str(out), "--shard-size", "4", "--batch-size", "3") == 0
    table = read_output(out)
    rows = load_lary_split(str(lary_folder), "libero", split="validation")
    assert table.column("id").to_pylist() == sorted(rows["id"])
    assert sorted(path.name for path in out.glob("*.parquet")) == [f"shard-0000{i}-of-00003.parquet" for i in range(3)]

    by_id = {row["id"]: row for row in rows}
    first = [by_id[i] for i in table.column("id").to_pylist()]
    pixels = LapaDinov3Processor()(images=[[row["source_image"], row["target_image"]] for row in first])
    with torch.inference_mode():
        expected = model(**pixels)
    np.testing.assert_array_equal(np.array(table.column("action_indices").to_pylist()), expected.action_indices.numpy())
    for name in ("latent_actions", "continuous_latent_actions"):
        np.testing.assert_allclose(np.array(table.column(name).to_pylist()), expected[name].numpy(), atol=1e-5)
    assert table.column("label").to_pylist() == [row["label"] for row in first]

    info = read_manifest(out)
    assert (info["model"], info["dataset"], info["config"], info["split"]) == (str(tiny_model), str(lary_folder), "libero", "validation")
    assert info["rows"] == 10 and info["shards"] == sorted(path.name for path in out.glob("*.parquet"))
    assert info["model_revision"].startswith("sha256:") and info["feature_columns"] == LATENT_COLUMNS
    assert info["label_names"] == rows.features["label"].names
    assert info["shard_size"] == 4 and not (out / "errors.jsonl").exists()
    split = load_split(out, target="label")  # what `lary evaluate` reads
    assert split.features.shape == (10, 16, model.config.hidden_size)


def test_lary_clips_give_stacked_pairs_each_frame_encoded_once(tmp_path, tiny_model, lary_folder, model, monkeypatch):
    out = tmp_path / "out"
    frames_seen = []
    backbone_forward = DINOv3ViTModel.forward

    def counting_forward(self, pixel_values, *args, **kwargs):
        frames_seen.append(len(pixel_values))
        return backbone_forward(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(DINOv3ViTModel, "forward", counting_forward)
    assert extract("--model", str(tiny_model), "--dataset", str(lary_folder), "--dataset-config", "robot_1st",
                   "--out", str(out), "--batch-size", "16") == 0
    monkeypatch.undo()
    assert frames_seen == [18, 9]  # two 9-frame clips (16 pairs) per batch, then the last one; no frame twice
    table = read_output(out)
    assert table.num_rows == 3 and table.schema.field("action_indices").type == pa.list_(pa.list_(pa.int64()))
    indices = np.array(table.column("action_indices").to_pylist())
    assert indices.shape == (3, 8, 16)  # 9 frames -> 8 pairs per clip

    row = load_lary_split(str(lary_folder), "robot_1st", split="validation")[0]
    assert table.column("id")[0].as_py() == row["id"]
    with torch.inference_mode():
        expected = model(**LapaDinov3Processor()(videos=[row["frames"]]))
    np.testing.assert_array_equal(indices[0], expected.action_indices[0].numpy())
    np.testing.assert_allclose(np.array(table.column("latent_actions")[0].as_py()), expected.latent_actions[0], atol=1e-5)
    assert read_manifest(out)["pairs"] == 24


def test_regression_rows_pass_actions_and_metadata_through(tmp_path, tiny_model, lary_folder):
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--dataset", str(lary_folder), "--dataset-config", "calvin",
                   "--out", str(out), "--limit", "4") == 0
    table = read_output(out)
    rows = load_lary_split(str(lary_folder), "calvin", split="validation").select(range(4))
    assert table.column_names == ["id", *LATENT_COLUMNS, "action", "perspective"]
    assert table.column("id").to_pylist() == sorted(rows["id"])
    by_id = {row["id"]: row for row in rows}
    for sample_id, action in zip(table.column("id").to_pylist(), table.column("action").to_pylist()):
        np.testing.assert_array_equal(np.array(action, np.float32), np.array(by_id[sample_id]["action"], np.float32))
    assert "label_names" not in read_manifest(out)


def test_encoder_features_of_both_frames(tmp_path, lary_folder):
    torch.manual_seed(0)
    encoder_dir = tmp_path / "encoder"
    encoder = AutoModel.from_config(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=64, patch_size=8, image_size=32)).eval()
    encoder.save_pretrained(encoder_dir)
    image_processor = BitImageProcessorPil(size={"height": 32, "width": 32}, do_center_crop=False)
    image_processor.save_pretrained(encoder_dir)
    out = tmp_path / "out"
    assert extract("--encoder", str(encoder_dir), "--dataset", str(lary_folder), "--dataset-config", "libero",
                   "--out", str(out), "--limit", "3") == 0
    table = read_output(out)
    assert table.column_names == ["id", "features", "label"]
    rows = load_lary_split(str(lary_folder), "libero", split="validation").select(range(3))
    by_id = {row["id"]: row for row in rows}
    first = [by_id[i] for i in table.column("id").to_pylist()]
    pixels = image_processor(images=[image for row in first for image in (row["source_image"], row["target_image"])],
                             return_tensors="pt")["pixel_values"]
    expected = encode_frame_pairs(encoder, pixels.unflatten(0, (3, 2)))
    assert expected.shape == (3, 2 * 16, 32)
    np.testing.assert_allclose(np.array(table.column("features").to_pylist()), expected.numpy(), atol=1e-5)
    assert read_manifest(out)["feature_columns"] == ["features"]
    assert load_split(out).feature_name == "features"


def test_different_arguments_into_the_same_folder_are_refused(tmp_path, tiny_model, lary_folder):
    out = tmp_path / "out"
    args = ["--model", str(tiny_model), "--dataset", str(lary_folder), "--dataset-config", "libero", "--out", str(out)]
    assert extract(*args, "--limit", "2") == 0
    with pytest.raises(ValueError, match=r"run of other inputs, model or options[\s\S]*inputs.rows: 2 there, 3 now"):
        extract(*args, "--limit", "3")
    assert extract(*args, "--limit", "2", "--batch-size", "7") == 0  # batch size does not change the output


def test_each_command_in_a_process_gets_the_device_and_precision_it_asks_for():
    """accelerate keeps the first `PartialState(cpu=...)` of a process and ignores later `cpu` flags (a benchmark that
    ran a CPU extract and then a GPU one in one process got the CPU twice, 2026-11-28, on an H200), and a later
    `Accelerator` with another precision raises "restart your runtime"."""
    from accelerate.state import AcceleratorState

    from lary.processes import accelerator, process_state

    try:
        assert process_state(cpu=True)._cpu is True
        assert process_state(cpu=False)._cpu is False
        assert accelerator(cpu=True).state._cpu is True  # as `lary evaluate --cpu` after an extract
        assert accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"  # then `lary train`
        assert process_state(cpu=True).device.type == "cpu"
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_float32_on_a_gpu_is_computed_without_tf32_and_the_settings_come_back():
    """PyTorch lets cuDNN's convolutions use TF32 by default; `lary extract --dtype float32` turns it off for its
    loop (and only there), so a GPU gives the CPU's codes."""
    from lary.runtime import exact_float32

    def settings():
        return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    torch.backends.cudnn.allow_tf32, before = True, settings()
    with exact_float32(torch.device("cuda"), torch.float32):
        assert settings() == (False, False)
    assert settings() == before
    for device, dtype in (("cuda", torch.bfloat16), ("cpu", torch.float32)):
        with exact_float32(torch.device(device), dtype):
            assert settings() == before


def test_dtype_auto_takes_bfloat16_where_the_cpu_has_it_and_runs_record_the_choice(tmp_path, tiny_model, lary_folder,
                                                                                 monkeypatch):
    """`--dtype auto` is bfloat16 on a CPU with native bfloat16 and float32 elsewhere; run.json records the choice, so a
    resume on a machine that would choose otherwise is refused rather than mixing dtypes in one output."""
    from lary import runtime as models

    monkeypatch.setattr(models, "native_bfloat16", lambda: False)
    assert models.resolve_dtype("auto", torch.device("cpu")) == "float32"
    assert models.resolve_dtype("float16", torch.device("cpu")) == "float16"
    monkeypatch.setattr(models, "native_bfloat16", lambda: True)
    assert models.resolve_dtype("auto", torch.device("cpu")) == "bfloat16"

    out = tmp_path / "out"
    args = ["--model", str(tiny_model), "--dataset", str(lary_folder), "--dataset-config", "libero", "--limit", "2",
            "--out", str(out)]
    assert extract(*args, "--dtype", "auto") == 0
    assert json.loads((out / "run.json").read_text())["options"]["dtype"] == "bfloat16"
    assert extract(*args, "--dtype", "bfloat16") == 0  # the same run: nothing left to do
    monkeypatch.setattr(models, "native_bfloat16", lambda: False)
    with pytest.raises(ValueError, match="options.dtype"):
        extract(*args, "--dtype", "auto")


def test_native_bfloat16_reads_the_cpu_flags(tmp_path, monkeypatch):
    from lary import runtime as models

    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(models, "Path", lambda path: cpuinfo if path == "/proc/cpuinfo" else Path(path))
    for flags, native in (("fpu avx512f avx512_bf16", True), ("fpu amx_bf16", True), ("fpu avx2 avx512f", False)):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert models.native_bfloat16() is native
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # Arm
    assert models.native_bfloat16() is True
    cpuinfo.unlink()
    assert models.native_bfloat16() is False
