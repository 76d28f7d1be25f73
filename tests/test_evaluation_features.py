"""Reading `lary extract` outputs into the lazy feature store; also the writer of synthetic extract folders the other
evaluation tests use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lary.errors import LaryError
from lary.evaluation.features import check_feature_shapes, load_split, one_hot_indices


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Feature stores go to a per-test folder (through `LARY_CACHE`, the default of `load_split`)."""
    monkeypatch.setenv("LARY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


def write_extract_output(
    outdir: Path, columns: dict[str, list], model: str = "tiny-lam", split: str = "train", shards: int = 2, **manifest
) -> Path:
    """Write `columns` (with `id`) as Parquet shards plus `manifest.json`, the layout `lary extract` writes."""
    outdir.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns)
    bounds = np.linspace(0, table.num_rows, shards + 1).astype(int)
    names = []
    for i in range(shards):
        names.append(f"{split}-{i:05d}-of-{shards:05d}.parquet")
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), outdir / names[-1])
    feature_columns = [name for name in columns if name in ("latent_actions", "continuous_latent_actions", "action_indices", "features")]
    (outdir / "manifest.json").write_text(
        json.dumps(
            {"model": model, "model_revision": None, "dataset": "synthetic/lary", "config": manifest.pop("config", "toy"),
             "split": split, "rows": table.num_rows, "shards": names, "arguments": {}, "feature_columns": feature_columns,
             **manifest}
        )
    )
    return outdir


def _ids(n: int) -> list[str]:
    return [f"row{i:05d}" for i in range(n)]


def test_rows_sorted_by_id_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    order = rng.permutation(10)
    latents = rng.normal(size=(10, 3, 4)).astype(np.float32)
    write_extract_output(
        tmp_path / "out",
        {"id": [f"row{i:05d}" for i in order], "latent_actions": latents.tolist(), "label": order.tolist()},
        shards=3,
    )
    split = load_split(tmp_path / "out", target="label")
    assert split.ids == _ids(10)
    assert split.feature_name == "latent_actions"
    np.testing.assert_array_equal(split.labels, np.arange(10))
    np.testing.assert_array_equal(split.features[order].numpy(), latents)


def test_store_batches_equal_the_dense_rows(tmp_path, cache_dir):
    # What the in-memory loader gave: all rows sorted by id, cast to float32. Written as float64 over 3 shards.
    rng = np.random.default_rng(0)
    order = rng.permutation(200)
    clips = rng.normal(size=(200, 2, 3, 5))
    write_extract_output(tmp_path / "out", {"id": _ids(200), "latent_actions": clips.tolist()}, shards=1)
    write_extract_output(
        tmp_path / "shuffled", {"id": [_ids(200)[i] for i in order], "latent_actions": clips[order].tolist()}, shards=3
    )
    dense = clips.astype(np.float32)
    for folder in ("out", "shuffled"):
        store = load_split(tmp_path / folder).features
        assert store.shape == dense.shape and len(store) == 200
        rows = torch.from_numpy(rng.integers(0, 200, 64))  # unsorted, with repeats, as sampling with replacement
        batch = store[rows]
        assert batch.dtype == torch.float32
        np.testing.assert_array_equal(batch.numpy(), dense[rows.numpy()])
        assert store[torch.arange(0)].shape == (0, 2, 3, 5)
        np.testing.assert_array_equal(np.load(store.path, mmap_mode="r"), dense)  # a valid .npy in the cache folder
        assert store.path.parent.parent == cache_dir
        with pytest.raises(IndexError, match="rows 0..200 out of range for 200 rows"):
            store[[0, 200]]


def test_store_is_written_once_and_again_when_a_shard_changes(tmp_path, cache_dir):
    columns = {"id": _ids(4), "latent_actions": np.zeros((4, 2, 3)).tolist()}
    write_extract_output(tmp_path / "out", columns)
    first = load_split(tmp_path / "out").features.path
    written = first.stat().st_mtime_ns
    assert load_split(tmp_path / "out").features.path == first and first.stat().st_mtime_ns == written
    write_extract_output(tmp_path / "out", {**columns, "latent_actions": np.ones((4, 2, 3)).tolist()})
    store = load_split(tmp_path / "out").features
    assert store.path != first
    np.testing.assert_array_equal(store[[3]].numpy(), np.ones((1, 2, 3)))
    assert not [path for path in cache_dir.iterdir() if path.name.endswith(".tmp")]


def test_rows_of_another_shape_in_a_later_shard_name_both_files(tmp_path):
    write_extract_output(tmp_path / "out", {"id": _ids(2), "latent_actions": np.zeros((2, 1, 4)).tolist()}, shards=1)
    other = pa.table({"id": ["z"], "latent_actions": np.zeros((1, 1, 3)).tolist()})
    pq.write_table(other, tmp_path / "out" / "z.parquet")
    with pytest.raises(ValueError, match=r"shape \(1, 3\) in .*z\.parquet but \(1, 4\) in .*train-00000-of-00001"):
        load_split(tmp_path / "out")


def test_encoder_features_are_the_default_without_latent_actions(tmp_path):
    features = np.ones((4, 2, 6, 5), dtype=np.float32)  # clips: pairs x 2*patches x D
    write_extract_output(tmp_path / "out", {"id": _ids(4), "features": features.tolist(), "label": [0, 1, 0, 1]})
    split = load_split(tmp_path / "out", target="label")
    assert split.feature_name == "features"
    assert split.features.shape == (4, 2, 6, 5)


def test_missing_column_names_column_and_file(tmp_path):
    write_extract_output(tmp_path / "out", {"id": _ids(2), "latent_actions": [[[0.0]], [[1.0]]]}, shards=1)
    with pytest.raises(LaryError, match=r"'label' missing from .*train-00000-of-00001\.parquet"):
        load_split(tmp_path / "out", target="label")


def test_shape_mismatch_reports_both_shapes(tmp_path):
    write_extract_output(tmp_path / "a", {"id": _ids(2), "latent_actions": np.zeros((2, 4, 8)).tolist()})
    write_extract_output(tmp_path / "b", {"id": _ids(2), "latent_actions": np.zeros((2, 4, 6)).tolist()})
    with pytest.raises(ValueError, match=r"\(4, 8\).*\(4, 6\)"):
        check_feature_shapes(load_split(tmp_path / "a"), load_split(tmp_path / "b"))


def test_action_indices_become_one_hot_over_both_splits(tmp_path):
    write_extract_output(tmp_path / "a", {"id": _ids(2), "action_indices": [[0, 1], [2, 1]]})
    write_extract_output(tmp_path / "b", {"id": _ids(1), "action_indices": [[4, 0]]})
    train, val = load_split(tmp_path / "a", "action_indices"), load_split(tmp_path / "b", "action_indices")
    assert train.features.dtype == np.int64  # stored as codes, expanded per batch
    assert one_hot_indices(train, val) == 5
    assert train.features.shape == (2, 2, 5) and val.features.shape == (1, 2, 5)
    np.testing.assert_array_equal(train.features[[1, 0]].numpy(), np.eye(5, dtype=np.float32)[[[2, 1], [0, 1]]])
    np.testing.assert_array_equal(val.features[[0]][0].argmax(-1), [4, 0])


def test_ragged_actions_are_kept_per_row(tmp_path):
    actions = [np.zeros((2, 3)).tolist(), np.ones((2, 5)).tolist()]
    write_extract_output(
        tmp_path / "out",
        {"id": _ids(2), "latent_actions": np.zeros((2, 1, 2)).tolist(), "action": actions, "robot_type": ["a", "b"]},
    )
    split = load_split(tmp_path / "out", target="action")
    assert [a.shape for a in split.actions] == [(2, 3), (2, 5)]
    assert split.robot_types == ["a", "b"]
