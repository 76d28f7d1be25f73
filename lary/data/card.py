"""The dataset card (`README.md`) of a prepared LARY folder: `configs:` YAML for `load_dataset`, counts, skips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .builders import CITATION, HOMEPAGE, LICENSE

SHOWN_SKIPS = 50


def configs_yaml(infos: list[dict[str, Any]]) -> str:
    """The card's `configs:` list: one entry per config, `data_files` globs per split."""
    lines = ["configs:"]
    for info in infos:
        lines.append(f"- config_name: {info['config']}")
        lines.append("  data_files:")
        for split in info["splits"]:
            lines += [f"  - split: {split}", f"    path: {info['config']}/{split}-*.parquet"]
    return "\n".join(lines)


def _skips(infos: list[dict[str, Any]]) -> list[str]:
    lines = []
    for info in infos:
        for split, split_info in info["splits"].items():
            skipped = split_info["skipped"]
            if not skipped:
                continue
            lines.append(f"\n`{info['config']}` / `{split}`: {len(skipped)} row(s) left out (`--skip-missing`).\n")
            lines += [f"- `{item['id']}`: `{item['path']}` ({item['reason']})" for item in skipped[:SHOWN_SKIPS]]
            if len(skipped) > SHOWN_SKIPS:
                lines.append(f"- ... {len(skipped) - SHOWN_SKIPS} more in `{info['config']}/prepare_info.json`")
    return lines


def render_card(infos: list[dict[str, Any]]) -> str:
    table = ["| config | kind | " + " | ".join(("train", "validation", "unseen")) + " |", "|---|---|---|---|---|"]
    for info in infos:
        counts = [str(info["splits"][split]["rows"]) if split in info["splits"] else "-"
                  for split in ("train", "validation", "unseen")]
        table.append(f"| `{info['config']}` | {info['kind']} | " + " | ".join(counts) + " |")
    first = infos[0]["config"] if infos else "libero"
    skips = _skips(infos)
    parts = [
        "---",
        f"license: {LICENSE}",
        "pretty_name: LARY",
        "tags:\n- robotics\n- latent-actions",
        configs_yaml(infos),
        "---",
        "",
        "# LARY: Latent Action Representation Yielding benchmark",
        "",
        f"The LARY benchmark ([project page]({HOMEPAGE})) as Parquet, one config per track. Ids are "
        "`<config>/<split>/<row index in the LARY metadata CSV>`; rows keep CSV order.",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("PATH_OR_REPO", "{first}", split="validation")',
        "```",
        "",
        "For a local copy, `lary.data.load_lary_split(FOLDER, CONFIG, SPLIT)` reads the same files and never serves "
        "another folder's cached rows (`load_dataset` keys a local folder's cache by its name and card only).",
        "",
        "Regression configs hold `action` chunks (stride x dof, float32); their `action_stats.json` has the "
        "mean and std of the train split's actions (overall, and per `robot_type` where present).",
        "",
        "## Rows",
        "",
        *table,
        "",
        "## Rows left out",
        *(skips or ["", "None."]),
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(parts)


def write_card(out: Path, infos: list[dict[str, Any]]) -> Path:
    path = out / "README.md"
    path.write_text(render_card(infos), encoding="utf-8")
    return path
