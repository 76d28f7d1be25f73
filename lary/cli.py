"""The `lary` command line: one typed config per command (`lary.configs`), parsed before anything heavy is imported.

What a user can cause ends in one `lary COMMAND: ...` line and its exit code (`EXIT_CODES`): bad input (a `LaryError`:
a missing file, a wrong key or value), a full disk, Ctrl-C or SIGTERM. Anything else is a bug and keeps its traceback.
`LARY_TRACEBACK=1` shows the traceback of bad input too.

Exit codes: 0 done; 1 done, but some items failed (`lary extract`: samples that could not be read, listed in
errors.jsonl: rerun to retry them); 2 bad input; 3 no space left on the disk (what was finished is kept); 130
interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from dataclasses import dataclass

from lary import logs, registration
from lary.launcher import end_with_launcher, raise_if_stopped, stop_on_signals
from lary.configs import parser as config_parser
from lary.errors import EXIT_BAD_INPUT, EXIT_NO_SPACE, LaryError, one_line_errors  # noqa: F401 (LaryError: lary.cli.LaryError)

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_CODES = (
    "exit codes: 0 done; 1 done, but some items failed (lary extract: see OUT/errors.jsonl, rerun to retry them); "
    f"{EXIT_BAD_INPUT} bad input; {EXIT_NO_SPACE} no space left on the disk; {EXIT_INTERRUPTED} interrupted (Ctrl-C, SIGTERM)"
)


@dataclass(frozen=True)
class Command:
    config: str  # "module:Class" of its config (a light module)
    runner: str  # "module:function" that runs it: `function(config)`, returning an exit code or a result
    help: str
    resumes: bool = False  # the same command run again continues where an interrupted one stopped


COMMANDS: dict[str, Command] = {
    "extract": Command("lary.configs.extract:ExtractConfig", "lary.extract.command:extract",
                       "Latent actions (or encoder features) of datasets, videos, image folders or LeRobot episodes, sharded and resumable.",
                       resumes=True),
    "export": Command("lary.configs.export:ExportConfig", "lary.lerobot.command:export",
                      "Write `lary extract --lerobot` latent actions into a copy of the LeRobot dataset, as per-frame features."),
    "evaluate": Command("lary.configs.evaluate:EvaluateConfig", "lary.evaluation.evaluate:evaluate",
                        "Train a LARY classification or regression probe on `lary extract` outputs."),
    "leaderboard": Command("lary.configs.evaluate:LeaderboardConfig", "lary.evaluation.leaderboard:leaderboard",
                           "Markdown table of `lary evaluate` results in the LARY paper's layout."),
    "train": Command("lary.configs.train:TrainConfig", "lary.training.trainer:train",
                     "Train a LAPA-DINOv3-style latent action model (under `accelerate launch` for DDP)."),
    "convert": Command("lary.configs.model:ConvertConfig", "lary.convert:convert",
                       "Convert a LARYBench LAPA-DINOv3 checkpoint into a Hub-ready folder."),
    "endpoint": Command("lary.configs.endpoint:EndpointConfig", "lary.endpoint:endpoint",
                        "Add the Inference Endpoints handler (handler.py, requirements.txt) to a model folder."),
    "demo": Command("lary.configs.model:DemoConfig", "lary.demo:demo",
                    "Latent action codes of a clip (the embedded tiny model, or --model): a table and a PNG timeline."),
    "app": Command("lary.configs.app:AppConfig", "lary.app.command:app",
                   "The Hub Space's page on this machine: drop in a video, see its latent actions (Gradio)."),
    "prepare": Command("lary.configs.data:PrepareConfig", "lary.data.prepare:prepare_command",
                       "Write LARY configs as Parquet shards with a dataset card, from DATA_DIR and metadata CSVs."),
    "publish": Command("lary.configs.data:PublishConfig", "lary.data.publish:publish_command",
                       "Upload a `lary prepare` folder to a Hub dataset repository."),
}


def _load(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lary", description="Latent actions and the LARY benchmark.", epilog=EXIT_CODES)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        subparsers.add_parser(name, help=command.help, description=command.help)
    return parser


def parse(argv: list[str]) -> tuple[str, object, int]:
    """(command, its config, verbosity) from the command line; `--help` and usage errors exit here."""
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints usage, or help for -h, and exits
        raise SystemExit(2)
    name, command = argv[0], COMMANDS[argv[0]]
    config_class = _load(command.config)
    parser = config_parser.build_parser(config_class, f"lary {name}", command.help)
    parser.epilog = EXIT_CODES
    parser.add_argument("-v", "--verbose", action="count", default=0, help="More messages (-v: debug).")
    parser.add_argument("-q", "--quiet", action="store_true", help="Warnings and errors only.")
    namespace = parser.parse_args(argv[1:])
    verbosity = -1 if namespace.quiet else namespace.verbose
    config = config_parser.from_namespace(config_class, namespace)
    if hasattr(config, "command"):
        config.command = "lary " + shlex.join(argv)
    return name, config, verbosity


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    name, config, verbosity = parse(argv)
    config_parser.validate(config)
    logs.setup(verbosity)
    registration.register()
    try:
        result = _load(COMMANDS[name].runner)(config)  # an exit code, or what the library function returns
    finally:
        _leave_process_group()
    return result if isinstance(result, int) else 0


def _leave_process_group() -> None:
    """Destroy the process group a command under `accelerate launch` joined, if it is still there: a process that
    exits with gloo's threads running can abort (SIGABRT) while the interpreter shuts down."""
    distributed = sys.modules.get("torch.distributed")  # not imported by commands that never needed torch
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def run() -> None:
    """Console entry point: `main`, with what a user can cause reported on one line and its exit code (`EXIT_CODES`)."""
    end_with_launcher()
    stop_on_signals()
    command = next((arg for arg in sys.argv[1:2] if arg in COMMANDS), None)
    prog = " ".join(["lary", *([command] if command else [])])
    try:
        with one_line_errors(prog):
            code = main()
            raise_if_stopped()  # a stop whose first KeyboardInterrupt was swallowed is not an exit 0
            sys.exit(code)
    except KeyboardInterrupt:
        if logs.is_main_process():  # the other processes of a launch end with it, silently
            resume = "; rerun the same command to resume" if command and COMMANDS[command].resumes else ""
            print(f"{prog}: interrupted{resume}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    run()
