"""`LaryBuilder`: a 🤗 datasets builder with one config per LARY track, for the Arrow cache without Parquet.

    builder = LaryBuilder(config_name="libero", data_dir=DATA_DIR, metadata_dir=CSV_DIR)
    builder.download_and_prepare()
    validation = builder.as_dataset(split="validation")
"""

from __future__ import annotations

from pathlib import Path

import datasets

from lary.errors import LaryError

from .examples import build_features, class_names, load_example, read_rows
from .layout import LAYOUTS, get_layout
from .media import MediaError

CITATION = """\
@article{lary2026,
  title   = {LARY: A Latent Action Representation Yielding Benchmark for Generalizable Vision-to-Action Alignment},
  journal = {arXiv preprint arXiv:2604.11689},
  year    = {2026},
}"""
HOMEPAGE = "https://meituan-longcat.github.io/LARYBench/"
LICENSE = "cc-by-nc-sa-4.0"


class LaryConfig(datasets.BuilderConfig):
    """A LARY track. `data_dir` is LARYBench's DATA_DIR, `metadata_dir` the folder of its metadata CSVs;
    `skip_missing` leaves out rows whose media are missing or unreadable instead of failing."""

    def __init__(self, *args, metadata_dir: str | None = None, skip_missing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.metadata_dir = metadata_dir
        self.skip_missing = skip_missing


class LaryBuilder(datasets.GeneratorBasedBuilder):
    """Builds any LARY config from a DATA_DIR and metadata CSVs, rows in CSV order."""

    BUILDER_CONFIG_CLASS = LaryConfig
    BUILDER_CONFIGS = [LaryConfig(name=name) for name in LAYOUTS]

    def _check_dirs(self) -> tuple[Path, Path]:
        if not self.config.data_dir or not self.config.metadata_dir:
            raise LaryError("LaryBuilder needs data_dir= (LARYBench DATA_DIR) and metadata_dir= (its CSV folder)")
        return Path(self.config.data_dir), Path(self.config.metadata_dir)

    def _info(self) -> datasets.DatasetInfo:
        layout = get_layout(self.config.name)
        _, metadata_dir = self._check_dirs()
        names = class_names(layout, metadata_dir) if layout.kind != "regression" else None
        return datasets.DatasetInfo(
            description=f"LARY {layout.name} ({layout.kind})",
            features=build_features(layout, names),
            citation=CITATION,
            homepage=HOMEPAGE,
            license=LICENSE,
        )

    def _split_generators(self, dl_manager):
        layout = get_layout(self.config.name)
        _, metadata_dir = self._check_dirs()
        generators = [
            datasets.SplitGenerator(name=split, gen_kwargs={"split": split})
            for split in layout.csv_names
            if layout.csv_path(metadata_dir, split).is_file()
        ]
        if not generators:
            raise LaryError(f"No {layout.name} CSVs ({', '.join(layout.csv_names.values())}) in {metadata_dir}")
        return generators

    def _generate_examples(self, split: str):
        layout = get_layout(self.config.name)
        data_dir, metadata_dir = self._check_dirs()
        names = self.info.features["label"].names if "label" in self.info.features else None
        media_dir = layout.media_dir(data_dir, split)
        for index, row in enumerate(read_rows(layout.csv_path(metadata_dir, split), layout.columns)):
            try:
                example = load_example(layout, row, index, split, media_dir, names)
            except MediaError:
                if self.config.skip_missing:
                    continue
                raise
            yield example["id"], example
