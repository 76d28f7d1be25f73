"""The `lary` command line: one subcommand per module, imported only when it runs."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lary import registration

# name -> (module, one-line help). Each module defines `add_arguments(parser)` and `main(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("lary.convert", "Convert a LARYBench LAPA-DINOv3 checkpoint into a Hub-ready folder."),
    "extract": ("lary.extract", "Latent actions (or encoder features) of a dataset, videos or image folders, sharded and resumable."),
    "evaluate": ("lary.evaluation.evaluate", "Train a LARY classification or regression probe on `lary extract` outputs."),
    "leaderboard": ("lary.evaluation.leaderboard", "Markdown table of `lary evaluate` results in the LARY paper's layout."),
    "train": ("lary.training.command", "Train a LAPA-DINOv3-style latent action model (under `accelerate launch` for DDP)."),
    "demo": ("lary.demo", "Latent action codes of a clip with the embedded tiny model: a table and a PNG timeline."),
    "prepare": ("lary.data.prepare", "Write LARY configs as Parquet shards with a dataset card, from DATA_DIR and metadata CSVs."),
    "publish": ("lary.data.publish", "Upload a `lary prepare` folder to a Hub dataset repository."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lary", description="Latent actions and the LARY benchmark.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage, or help for -h, and exits
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"lary {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    registration.register()
    return int(module.main(args) or 0)


# What bad input raises: a file, key or value the message names. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, KeyError)


def run() -> None:
    """Console entry point: `main`, with bad input reported as one `lary COMMAND: error: ...` line (exit code 2);
    `LARY_TRACEBACK=1` shows the full traceback instead."""
    try:
        sys.exit(main())
    except USER_ERRORS as error:
        if os.environ.get("LARY_TRACEBACK") == "1":
            raise
        prog = " ".join(["lary", *(arg for arg in sys.argv[1:2] if arg in COMMANDS)])
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
