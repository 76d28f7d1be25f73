"""`lary leaderboard`: a Markdown table of `lary evaluate` results in the LARY paper's layout (rows: models; columns:
the classification tasks and their average, then the regression tasks and their average)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lary.configs.evaluate import LeaderboardConfig
from lary.errors import LaryError

from .features import DEFAULT_FEATURES

logger = logging.getLogger(__name__)

# The LARY tasks in the paper's column order; other tasks follow alphabetically.
TASK_ORDER = {
    "classification": ("human_1st", "robot_1st"),
    "regression": ("calvin", "vlabench", "agibotbeta", "robocoin"),
}
AVERAGE_HEADER = {"classification": "Cls. avg ↑", "regression": "Reg. avg ↓"}
LEGEND = (
    "Classification: validation top-1 accuracy (%) of the best probe head, higher is better. "
    "Regression: validation MSE on z-scored actions at the best epoch, lower is better (1.0 = predicting the mean)."
)


def collect_results(paths: list[Path]) -> list[tuple[Path, dict]]:
    """Every results.json named, or found under a named folder."""
    files = []
    for path in paths:
        found = sorted(path.rglob("results.json")) if path.is_dir() else [path]
        if not found or not found[0].is_file():
            raise LaryError(f"no results.json at {path}")
        files.extend(found)
    return [(file, json.loads(file.read_text())) for file in files]


def row_name(result: dict) -> str:
    """The model, plus the feature column when it is not the model's default representation."""
    model = result.get("model") or "?"
    return model if result.get("feature") in DEFAULT_FEATURES else f"{model} ({result['feature']})"


def task_name(result: dict) -> str:
    return str(result.get("config") or result.get("dataset"))


def _ordered(task: str, names: set[str]) -> list[str]:
    known = [name for name in TASK_ORDER[task] if name in names]
    return known + sorted(names - set(known))


def build_leaderboard(results: list[tuple[Path, dict]]) -> str:
    """The Markdown table; an average is shown only for rows that have every column of its task."""
    cells: dict[str, dict[tuple[str, str], float]] = {}
    sources: dict[tuple[str, str, str], Path] = {}
    for path, result in results:
        key = (result["task"], task_name(result))
        row = row_name(result)
        if (row, *key) in sources:
            raise LaryError(f"two results for {row} on {key[1]} ({key[0]}): {sources[(row, *key)]} and {path}")
        sources[(row, *key)] = path
        value = result["value"]
        cells.setdefault(row, {})[key] = 100 * value if result["task"] == "classification" else value
    columns = {
        task: _ordered(task, {name for row in cells.values() for t, name in row if t == task}) for task in TASK_ORDER
    }
    header, formats = ["Model"], []
    for task, names in columns.items():
        if names:
            header += names + [AVERAGE_HEADER[task]]
            formats.append((task, names, "{:.2f}" if task == "classification" else "{:.4f}"))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, values in cells.items():
        line = [row]
        for task, names, fmt in formats:
            present = [values[(task, name)] for name in names if (task, name) in values]
            line += [fmt.format(values[(task, name)]) if (task, name) in values else "–" for name in names]
            line.append(fmt.format(sum(present) / len(present)) if len(present) == len(names) else "–")
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines) + f"\n\n{LEGEND}\n"


def leaderboard(config: LeaderboardConfig) -> str:
    """Write the table of `config.results` to `config.out` (and print it); returns it."""
    table = build_leaderboard(collect_results(config.results))
    print(table)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(table)
    logger.info("wrote %s", config.out)
    return table
