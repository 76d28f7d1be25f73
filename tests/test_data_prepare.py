"""`lary prepare` on miniature LARY trees built from real metadata rows, read back with `load_dataset`."""

from __future__ import annotations

import json
import sys

import datasets
import numpy as np
import pytest
from conftest import shared_path
from lary_tree import csv_rows, make_lary_tree, synthetic_action, synthetic_image, write_csv
from PIL import Image

from lary.cli import main as cli_main
from lary.errors import LaryError
from lary.data.layout import LAYOUTS
from lary.data.prepare import prepare

ROWS = 10
REAL_CONFIGS = {"libero": ROWS, "calvin": ROWS, "vlabench_15": ROWS}


def load(out, config, split, **kwargs):
    """`load_dataset` with a cache beside `out`: datasets' cache key would mix up same-named local folders."""
    return datasets.load_dataset(str(out), config, split=split, cache_dir=str(out.parent / "hf_cache"), **kwargs)



@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Real validation rows of LIBERO, CALVIN and VLABench-15 (and the rows after them as train), prepared once."""
    shared = shared_path("lary", "metadata")
    root = tmp_path_factory.mktemp("lary")
    data_dir, metadata_dir = make_lary_tree(root, shared, REAL_CONFIGS, make_train_split=True)
    out = root / "out"
    prepare(data_dir, metadata_dir, out, num_proc=2)
    return data_dir, metadata_dir, out


@pytest.mark.parametrize("split", ["validation", "train"])
def test_libero_rows_images_and_labels(prepared, split):
    _, metadata_dir, out = prepared
    ds = load(out, "libero", split)
    rows = csv_rows(metadata_dir, "libero", split)
    assert ds["id"] == [f"libero/{split}/{i}" for i in range(len(rows))]
    assert [ds.features["label"].int2str(label) for label in ds["label"]] == [row["action"] for row in rows]
    assert len(ds.features["label"].names) == 28
    for example, row in zip(ds, rows):
        np.testing.assert_array_equal(np.asarray(example["source_image"]), synthetic_image(row["src_img"], 32))
        np.testing.assert_array_equal(np.asarray(example["target_image"]), synthetic_image(row["tgt_img"], 32))


def test_streaming_matches(prepared):
    _, _, out = prepared
    streamed = list(load(out, "libero", "validation", streaming=True))
    loaded = load(out, "libero", "validation")
    assert [row["id"] for row in streamed] == loaded["id"]
    assert streamed[3]["label"] == loaded[3]["label"]
    assert np.array_equal(np.asarray(streamed[3]["source_image"]), np.asarray(loaded[3]["source_image"]))


@pytest.mark.parametrize("config", ["calvin", "vlabench_15"])
def test_regression_actions_states_and_stats(prepared, config):
    data_dir, metadata_dir, out = prepared
    layout = LAYOUTS[config]
    ds = load(out, config, "validation").with_format("numpy")
    rows = csv_rows(metadata_dir, config, "validation")
    media = layout.media_dir(data_dir, "validation")
    assert len(ds) == len(rows)
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(ds[i]["action"], np.load(media / row["action"]))
        np.testing.assert_array_equal(ds[i]["source_state"], np.load(media / row["src_state"]))
        assert ds[i]["perspective"] == row["perspective"]
    assert ds[0]["action"].shape == (layout.stride, 7)

    train = csv_rows(metadata_dir, config, "train")
    actions = np.concatenate([synthetic_action(row["action"], layout.stride, 7) for row in train]).astype(np.float64)
    stats = json.loads((out / config / "action_stats.json").read_text())
    np.testing.assert_allclose(stats["all"]["mean"], actions.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats["all"]["std"], actions.std(0), rtol=1e-6, atol=1e-9)
    assert stats["all"]["count"] == len(actions)


def test_card_lists_configs_and_counts(prepared):
    _, _, out = prepared
    card = (out / "README.md").read_text()
    header = card.split("---")[1]
    assert "license: cc-by-nc-sa-4.0" in header
    for config in REAL_CONFIGS:
        assert f"- config_name: {config}" in header
        assert f"path: {config}/validation-*.parquet" in header
        assert f"| `{config}` | " in card
    assert "@article" in card
    assert sorted(p.name for p in (out / "libero").glob("*.parquet")) == [
        "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"
    ]


def test_cli_prepare_subset_skips_absent_configs(tmp_path, capsys):
    data_dir, metadata_dir = make_lary_tree(tmp_path, None, {"agibotbeta": 3})
    assert cli_main(["prepare", "--data-dir", str(data_dir), "--metadata-dir", str(metadata_dir),
                     "--out", str(tmp_path / "out"), "--configs", "agibotbeta,robot_1st"]) == 0
    assert "skipping robot_1st" in capsys.readouterr().err  # the CLI logs to stderr
    unseen = load(tmp_path / "out", "agibotbeta", "unseen")
    assert len(unseen) == 3 and unseen.features["action"].shape == (45, 16)
    assert unseen[0]["task_id"] == csv_rows(metadata_dir, "agibotbeta", "unseen")[0]["task_id"]


def test_quiet_prepare_shows_no_progress_bar(tmp_path, capsys, monkeypatch):
    """-q: warnings only, no bar (every command's bars follow `lary.logs.progress_hidden`)."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # capsys's stderr, as a terminal (else no bar at all)
    data_dir, metadata_dir = make_lary_tree(tmp_path, None, {"agibotbeta": 3})
    common = ["prepare", "--data-dir", str(data_dir), "--metadata-dir", str(metadata_dir), "--configs", "agibotbeta"]
    assert cli_main([*common, "--out", str(tmp_path / "shown")]) == 0
    assert "prepare " in capsys.readouterr().err
    assert cli_main([*common, "--out", str(tmp_path / "quiet"), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_robocoin_per_robot_stats(tmp_path):
    data_dir, metadata_dir = make_lary_tree(tmp_path, None, {"robocoin": 6})
    prepare(data_dir, metadata_dir, tmp_path / "out")
    ds = load(tmp_path / "out", "robocoin", "train")
    rows = csv_rows(metadata_dir, "robocoin", "train")
    media = LAYOUTS["robocoin"].media_dir(data_dir, "train")
    for example, row in zip(ds, rows):
        np.testing.assert_array_equal(np.asarray(example["action"], dtype=np.float32), np.load(media / row["action"]))
    stats = json.loads((tmp_path / "out" / "robocoin" / "action_stats.json").read_text())
    assert stats["all"] is None  # the two robots differ in action size
    robot = "galaxea_r1_lite"
    actions = np.concatenate([np.load(media / r["action"]) for r in rows if r["robot_type"] == robot])
    np.testing.assert_allclose(stats["robot_type"][robot]["mean"], actions.mean(0), rtol=1e-5, atol=1e-7)
    assert len(stats["robot_type"][robot]["mean"]) == 14 and len(stats["robot_type"][""]["mean"]) == 12


def test_clip_frames_and_labels(tmp_path):
    data_dir, metadata_dir = make_lary_tree(tmp_path, None, {"human_1st": 4})
    prepare(data_dir, metadata_dir, tmp_path / "out", configs=["human_1st"])
    ds = load(tmp_path / "out", "human_1st", "validation")
    assert len(ds.features["label"].names) == 123
    rows = csv_rows(metadata_dir, "human_1st", "validation")
    for example, row in zip(ds, rows):
        indices = [int(i) for i in row["sample_indices"].split(",")]
        assert example["sample_indices"] == indices and len(example["frames"]) == 9
        # frame i of the synthetic clip is a flat gray of level 20 * i (mpeg4 is lossy: compare the mean)
        levels = [float(np.asarray(frame).mean()) for frame in example["frames"]]
        np.testing.assert_allclose(levels, [20 * i for i in indices], atol=4)
        assert ds.features["label"].int2str(example["label"]) == row["action"]


def test_shards_roll_over_and_keep_csv_order(tmp_path):
    data_dir, metadata_dir = make_lary_tree(tmp_path, None, {"agibotbeta": 12})
    out = tmp_path / "out"
    prepare(data_dir, metadata_dir, out, configs=["agibotbeta"], max_shard_size=1, num_proc=2)
    shards = sorted((out / "agibotbeta").glob("validation-*.parquet"))
    assert len(shards) > 1 and shards[-1].name.endswith(f"-of-{len(shards):05d}.parquet")
    ds = load(out, "agibotbeta", "validation")
    assert ds["id"] == [f"agibotbeta/validation/{i}" for i in range(12)]


@pytest.mark.parametrize("value", ["../../../secret.png", "{outside}", "link.png"],
                         ids=["dotdot", "absolute", "symlink"])
def test_csv_paths_that_lead_out_of_the_data_dir_are_refused_on_one_line(tmp_path, value):
    """A metadata CSV is data from elsewhere: a media path that is absolute, climbs out with `..` or is a symlink out
    of the media folder is refused before anything of its split is read or written, naming the CSV, the row and the
    value."""
    data_dir, metadata_dir = make_lary_tree(tmp_path, None, {"agibotbeta": 3})
    layout = LAYOUTS["agibotbeta"]
    # a readable image outside DATA_DIR: only the path check stops it
    Image.fromarray(synthetic_image("secret", 32)).save(tmp_path / "secret.png")
    media = layout.media_dir(data_dir, "validation")
    (media / "link.png").symlink_to(tmp_path / "secret.png")
    csv_path = layout.csv_path(metadata_dir, "validation")
    rows = csv_rows(metadata_dir, "agibotbeta", "validation")
    rows[1]["tgt_img"] = value.format(outside=tmp_path / "secret.png")
    write_csv(csv_path, rows)
    with pytest.raises(LaryError) as error:
        prepare(data_dir, metadata_dir, tmp_path / "out", configs=["agibotbeta"])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{csv_path}: row 1, column tgt_img: {rows[1]['tgt_img']!r} ")
    assert ("is an absolute path" if value == "{outside}" else "leads out of") in message
    assert not list((tmp_path / "out").glob("agibotbeta/*validation*"))
