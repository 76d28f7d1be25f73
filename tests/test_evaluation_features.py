"""Reading `lary extract` outputs; also the writer of synthetic extract folders the other evaluation tests use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lary.evaluation.features import check_feature_shapes, load_split, one_hot_indices


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
    np.testing.assert_allclose(split.features[order], latents)


def test_encoder_features_are_the_default_without_latent_actions(tmp_path):
    features = np.ones((4, 2, 6, 5), dtype=np.float32)  # clips: pairs x 2*patches x D
    write_extract_output(tmp_path / "out", {"id": _ids(4), "features": features.tolist(), "label": [0, 1, 0, 1]})
    split = load_split(tmp_path / "out", target="label")
    assert split.feature_name == "features"
    assert split.features.shape == (4, 2, 6, 5)


def test_missing_column_names_column_and_file(tmp_path):
    write_extract_output(tmp_path / "out", {"id": _ids(2), "latent_actions": [[[0.0]], [[1.0]]]}, shards=1)
    with pytest.raises(KeyError, match=r"'label' missing from .*train-00000-of-00001\.parquet"):
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
    assert one_hot_indices(train, val) == 5
    assert train.features.shape == (2, 2, 5) and val.features.shape == (1, 2, 5)
    np.testing.assert_array_equal(val.features[0].argmax(-1), [4, 0])


def test_ragged_actions_are_kept_per_row(tmp_path):
    actions = [np.zeros((2, 3)).tolist(), np.ones((2, 5)).tolist()]
    write_extract_output(
        tmp_path / "out",
        {"id": _ids(2), "latent_actions": np.zeros((2, 1, 2)).tolist(), "action": actions, "robot_type": ["a", "b"]},
    )
    split = load_split(tmp_path / "out", target="action")
    assert [a.shape for a in split.actions] == [(2, 3), (2, 5)]
    assert split.robot_types == ["a", "b"]
