"""`load_lary_split`: local folders read from the files on disk (not a stale `datasets` cache), features kept,
clear errors; `lary extract`'s DatasetSource goes through it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lary_tree import make_lary_tree, synthetic_image

from lary.data.loading import load_lary_split
from lary.data.prepare import prepare
from lary.errors import LaryError
from lary.extract.sources import DatasetSource

ROWS = 4


def prepare_libero(root, image_size: int):
    """Synthetic LIBERO rows prepared into `root/out`: the card depends on the row counts only, not on pixels."""
    data_dir, metadata_dir = make_lary_tree(root / "tree", None, {"libero": ROWS}, image_size=image_size)
    prepare(data_dir, metadata_dir, root / "out", configs=["libero"])
    return root / "out"


def image_sizes(dataset) -> set[tuple[int, int]]:
    return {example["source_image"].size for example in dataset}


def test_same_named_folders_keep_their_own_rows(tmp_path):
    """Two `out/` folders with identical cards: `load_dataset(folder)` gave the second one the first one's rows."""
    big, small = prepare_libero(tmp_path / "a", 32), prepare_libero(tmp_path / "b", 16)
    assert (big / "README.md").read_text() == (small / "README.md").read_text()
    assert image_sizes(load_lary_split(big, "libero", "validation")) == {(32, 32)}
    loaded = load_lary_split(small, "libero", "validation")
    assert image_sizes(loaded) == {(16, 16)}
    assert loaded["id"] == [f"libero/validation/{i}" for i in range(ROWS)]
    assert len(loaded.features["label"].names) == 28  # ClassLabel kept from the shards' schema
    source = DatasetSource(str(small), "libero", "validation")
    frames, passthrough = source.row(0)
    assert source.label_names == loaded.features["label"].names and np.stack(frames).shape == (2, 16, 16, 3)
    assert passthrough["label"] == loaded[0]["label"]


def test_folder_rewritten_in_place(tmp_path):
    out = prepare_libero(tmp_path / "a", 32)
    assert image_sizes(load_lary_split(out, "libero", "train")) == {(32, 32)}
    prepare_libero(tmp_path / "a", 16)
    reloaded = load_lary_split(out, "libero", "train")
    assert image_sizes(reloaded) == {(16, 16)}
    np.testing.assert_array_equal(np.asarray(reloaded[0]["source_image"]),
                                  synthetic_image("train/demo_0/action_start.png", 16))


def test_streaming_reads_the_same_rows(tmp_path):
    out = prepare_libero(tmp_path, 16)
    streamed = list(load_lary_split(out, "libero", "validation", streaming=True))
    assert [row["id"] for row in streamed] == load_lary_split(out, "libero", "validation")["id"]


CARD = """---
configs:
- config_name: pairs
  data_files:
  - split: train
    path: pairs/train-*.parquet
dataset_info:
- config_name: pairs
  features:
  - name: x
    dtype: int64
  - name: label
    dtype:
      class_label:
        names:
          '0': left
          '1': right
---
"""


@pytest.fixture
def plain_folder(tmp_path):
    """Shards written by pyarrow (no `huggingface` schema metadata); the card's `dataset_info` has the features."""
    (tmp_path / "pairs").mkdir()
    pq.write_table(pa.table({"x": [5, 6, 7], "label": [1, 0, 1]}), tmp_path / "pairs" / "train-00000.parquet")
    (tmp_path / "README.md").write_text(CARD)
    return tmp_path


def test_card_features_are_applied(plain_folder):
    loaded = load_lary_split(plain_folder, None, "train")  # the only config
    assert loaded["x"] == [5, 6, 7]
    assert loaded.features["label"].names == ["left", "right"]


@pytest.mark.parametrize(("config", "split", "message"), [
    ("nope", "train", r"no config 'nope' in README.md; configs: \['pairs'\]"),
    ("pairs", "validation", r"config 'pairs' has no split 'validation'; splits: \['train'\]"),
])
def test_missing_config_or_split_names_what_exists(plain_folder, config, split, message):
    with pytest.raises(ValueError, match=message) as error:
        load_lary_split(plain_folder, config, split)
    assert str(plain_folder) in str(error.value)


def test_config_without_files_names_its_patterns(plain_folder):
    (plain_folder / "pairs" / "train-00000.parquet").unlink()
    with pytest.raises(LaryError, match=r"config 'pairs', split 'train': no Parquet file matches"):
        load_lary_split(plain_folder, "pairs", "train")


def test_folder_without_card_configs_uses_split_names(tmp_path):
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "train-00000.parquet")
    pq.write_table(pa.table({"x": [3]}), tmp_path / "validation-00000.parquet")
    assert load_lary_split(tmp_path, None, "validation")["x"] == [3]
    with pytest.raises(ValueError, match="no `configs:` in README.md"):
        load_lary_split(tmp_path, "libero", "train")


def test_hub_ids_go_to_load_dataset(monkeypatch):
    calls = []
    monkeypatch.setattr("datasets.load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)))
    load_lary_split("someone/LARY", "libero", "validation", streaming=True, revision="v1")
    assert calls == [(("someone/LARY", "libero"), {"split": "validation", "streaming": True, "revision": "v1"})]
