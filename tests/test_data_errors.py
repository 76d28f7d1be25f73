"""Bad LARY input: clear errors, nothing half-written; and the builder class used directly."""

from __future__ import annotations

import csv

import datasets
import pytest
from lary_tree import make_lary_tree, write_csv

from lary.data import LaryBuilder
from lary.data import prepare as prepare_module
from lary.data.layout import LAYOUTS
from lary.data.media import ClipIndexError, MediaError
from lary.data.prepare import MediaFilesError, prepare


def rows_of(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture
def libero_tree(tmp_path, lary_metadata_dir):
    data_dir, metadata_dir = make_lary_tree(tmp_path, lary_metadata_dir, {"libero": 8})
    csv_path = LAYOUTS["libero"].csv_path(metadata_dir, "validation")
    return data_dir, metadata_dir, LAYOUTS["libero"].media_dir(data_dir, "validation"), rows_of(csv_path)


def test_missing_media_stops_with_count_and_paths(tmp_path, libero_tree):
    data_dir, metadata_dir, media, rows = libero_tree
    for row in rows[2:4]:
        (media / row["src_img"]).unlink()
    with pytest.raises(MediaFilesError, match="2 media file") as error:
        prepare(data_dir, metadata_dir, tmp_path / "out")
    assert rows[2]["src_img"] in str(error.value) and "--skip-missing" in str(error.value)
    assert not list((tmp_path / "out" / "libero").glob("**/validation-*.parquet"))


def test_skip_missing_leaves_rows_out_and_lists_them(tmp_path, libero_tree):
    data_dir, metadata_dir, media, rows = libero_tree
    (media / rows[2]["src_img"]).unlink()
    (media / rows[5]["tgt_img"]).write_bytes(b"not a png")
    info = prepare(data_dir, metadata_dir, tmp_path / "out", skip_missing=True)["libero"]["splits"]["validation"]
    assert info["rows"] == 6 and [item["id"] for item in info["skipped"]] == ["libero/validation/2",
                                                                              "libero/validation/5"]
    ds = datasets.load_dataset(str(tmp_path / "out"), "libero", split="validation", cache_dir=str(tmp_path / "c"))
    assert "libero/validation/2" not in ds["id"] and len(ds) == 6
    card = (tmp_path / "out" / "README.md").read_text()
    assert "2 row(s) left out" in card and rows[5]["tgt_img"] in card


def test_unreadable_image_stops_prepare(tmp_path, libero_tree):
    data_dir, metadata_dir, media, rows = libero_tree
    (media / rows[1]["tgt_img"]).write_bytes(b"not a png")
    with pytest.raises(MediaFilesError, match=r"1 media file.*\n.*unreadable image"):
        prepare(data_dir, metadata_dir, tmp_path / "out")
    assert not list((tmp_path / "out").glob("libero/**/*.parquet"))


def test_csv_without_columns_names_them(tmp_path, libero_tree):
    data_dir, metadata_dir, _, rows = libero_tree
    write_csv(LAYOUTS["libero"].csv_path(metadata_dir, "validation"),
              [{"src_img": row["src_img"], "label": row["action"]} for row in rows])
    with pytest.raises(ValueError, match="lacks the column\\(s\\) tgt_img, action"):
        prepare(data_dir, metadata_dir, tmp_path / "out")


def test_clip_index_past_the_end_names_file_and_index(tmp_path):
    data_dir, metadata_dir = make_lary_tree(tmp_path, None, {"human_1st": 2})
    csv_path = LAYOUTS["human_1st"].csv_path(metadata_dir, "validation")
    rows = rows_of(csv_path)
    rows[1]["sample_indices"] = "3,4,40"
    write_csv(csv_path, rows)
    with pytest.raises(ClipIndexError, match=rf"{rows[1]['video_path']}: sample index 40 is past the end"):
        prepare(data_dir, metadata_dir, tmp_path / "out", configs=["human_1st"], skip_missing=True)


def test_interrupted_prepare_leaves_no_partial_shards(tmp_path, libero_tree, monkeypatch):
    data_dir, metadata_dir, _, _ = libero_tree
    out = tmp_path / "out"
    real_load = prepare_module._load

    def interrupted(index_row, **kwargs):
        if index_row[0] == 5:
            raise KeyboardInterrupt
        return real_load(index_row, **kwargs)

    monkeypatch.setattr(prepare_module, "_load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(data_dir, metadata_dir, out)
    assert not list((out / "libero").iterdir())  # neither shards nor the staging folder
    monkeypatch.undo()
    prepare(data_dir, metadata_dir, out)
    assert [p.name for p in (out / "libero").glob("*.parquet")] == ["validation-00000-of-00001.parquet"]


def test_builder_download_and_prepare(tmp_path, lary_metadata_dir):
    data_dir, metadata_dir = make_lary_tree(tmp_path, lary_metadata_dir, {"vlabench_15": 4, "vlabench_30": 4})
    # the shared folder holds vlabench_15's validation CSV; vlabench_30 gets synthetic rows for both splits
    for config, splits_expected in (("vlabench_15", {"validation"}), ("vlabench_30", {"train", "validation"})):
        builder = LaryBuilder(config_name=config, data_dir=str(data_dir), metadata_dir=str(metadata_dir),
                              cache_dir=str(tmp_path / "cache"))
        builder.download_and_prepare()
        splits = builder.as_dataset()
        stride = LAYOUTS[config].stride
        assert set(splits) == splits_expected
        assert splits["validation"].with_format("numpy")[0]["action"].shape == (stride, 7)
        assert splits["validation"]["id"] == [f"{config}/validation/{i}" for i in range(4)]


def test_builder_raises_on_missing_media_unless_skipping(tmp_path, libero_tree):
    data_dir, metadata_dir, media, rows = libero_tree
    (media / rows[0]["src_img"]).unlink()
    kwargs = dict(config_name="libero", data_dir=str(data_dir), metadata_dir=str(metadata_dir))
    with pytest.raises(Exception) as error:
        LaryBuilder(cache_dir=str(tmp_path / "c1"), **kwargs).download_and_prepare()
    assert isinstance(error.value, MediaError) or isinstance(error.value.__cause__, MediaError)
    builder = LaryBuilder(cache_dir=str(tmp_path / "c2"), skip_missing=True, **kwargs)
    builder.download_and_prepare()
    assert builder.as_dataset(split="validation")["id"][0] == "libero/validation/1"
