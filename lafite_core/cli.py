"""The `lafite` command (also `python -m lafite_core`): one entry point for the kit's commands.

    lafite demo [--params params/demo.yaml]
    lafite embed --params params/embed.yaml
    lafite train --params params/train.yaml --set total_kimg=40
    lafite evaluate --params params/evaluate.yaml
    lafite sample "a red star" "a blue cross" --checkpoint results/runs/train --out grid.png
    lafite export results/runs/train my-generator.safetensors
    lafite run notebooks/02_train.ipynb --params params/train.yaml     # a notebook or a sweep, via the runner
    lafite collect ablation
    lafite convert ...                                                  # the authors' snapshots

Each command is the `main(argv)` of one module, imported only when it is called (so `lafite --help`
stays fast and a command's optional dependencies load only for it); `lafite <command> --help` shows
that module's options. `embed` is defined here: the cache module has no command line of its own.
"""

from __future__ import annotations

import argparse
import builtins
import importlib
import json
import sys
from dataclasses import dataclass
from typing import Callable

from lafite_core import config
from lafite_core.params import INPUT_ERRORS, add_params_arguments, command_parser, load_with_overrides, run_main
from lafite_core.run_lock import FolderLockedError, refuse_if_held


@dataclass(frozen=True)
class Command:
    module: str  # a module with main(argv) -> int, or "" for a function of this module
    summary: str
    prefix: tuple[str, ...] = ()  # arguments put before the user's (the runner's sub-command)
    extra_errors: tuple[str, ...] = ()  # exception class names (in `module` or builtins) reported as one line
    any_error: bool = False  # every failure as one line (the runner: a failed run is its log's business)
    folder: tuple[str, str, str] = ()  # (config class, field, writer) of the folder it locks: refused early


COMMANDS: dict[str, Command] = {
    "demo": Command("lafite_core.demo", "the embedded-default pipeline end to end (make demo)"),
    "run": Command("lafite_core.runner", "execute a notebook or a sweep file in run folders", ("run",), any_error=True),
    "collect": Command(
        "lafite_core.runner", "gather a sweep's metrics into results/<sweep>.csv/.md/.png", ("collect",), any_error=True
    ),
    "embed": Command(
        "", "embed a dataset into a feature cache (EmbedConfig)", folder=("EmbedConfig", "cache_dir", "embedding")
    ),
    "train": Command(
        "lafite_core.training",
        "train LAFITE (TrainConfig; torchrun for several GPUs)",
        extra_errors=("NonFiniteLossError",),
        folder=("TrainConfig", "run_dir", "training"),
    ),
    "evaluate": Command(
        "lafite_core.evaluation",
        "score a generator under a protocol (EvalConfig)",
        extra_errors=("RuntimeError",),
        folder=("EvalConfig", "output_dir", "evaluation"),
    ),
    "sample": Command("lafite_core.sampler", "draw a grid of images for prompts (SampleConfig)", ("sample",)),
    "export": Command("lafite_core.sampler", "a run's generator as one .safetensors file for sampling", ("export",)),
    "convert": Command("lafite_core.convert", "convert the LAFITE authors' snapshots into the kit's files"),
}


def embed_main(argv: list[str] | None = None) -> int:
    """Build (or continue, or reuse) a feature cache from an EmbedConfig params file."""
    from lafite_core.config import EmbedConfig
    from lafite_core.data.cache import embed_from_config

    parser = command_parser("embed", embed_main.__doc__)
    add_params_arguments(parser, "EmbedConfig", "data.size=2000")
    args = parser.parse_args(argv)
    cfg = load_with_overrides(EmbedConfig, args.params, args.overrides)
    cache, summary = embed_from_config(cfg)
    print(json.dumps(summary, indent=2, default=str))
    print(f"cache: {cache.folder}")
    return 0


def command_main(name: str) -> tuple[Callable[[list[str]], int | None], tuple[type[BaseException], ...]]:
    """The main function of command `name` and the errors it reports as one line."""
    command = COMMANDS[name]
    if not command.module:
        return embed_main, INPUT_ERRORS
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as err:
        if err.name != command.module:
            raise
        raise FileNotFoundError(f"`lafite {name}` needs {command.module}, which this installation lacks") from None
    errors = (Exception,) if command.any_error else INPUT_ERRORS
    errors = (*errors, *(getattr(module, e, None) or getattr(builtins, e) for e in command.extra_errors))
    return (lambda argv: module.main([*command.prefix, *argv])), errors


def refuse_held_folder(command: Command, argv: list[str]) -> None:
    """A folder another live process writes is refused before the command imports torch and loads
    anything (seconds instead of a minute on a busy machine); params the probe cannot read are left
    to the command, which reports them."""
    if not command.folder:
        return
    cls_name, field, what = command.folder
    probe = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_params_arguments(probe, cls_name, "")
    try:
        args, _ = probe.parse_known_args(argv)
        cfg = load_with_overrides(getattr(config, cls_name), args.params, args.overrides)
    except (SystemExit, argparse.ArgumentError, *INPUT_ERRORS):
        return
    refuse_if_held(getattr(cfg, field), what)


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(
        prog="lafite",
        description="LAFITE research kit: language-free text-to-image generation (CVPR 2022).",
        epilog="`lafite <command> --help` shows a command's options. Run it from the repository, as the README "
        "does: relative paths are read from the working directory (notebooks read them from LAFITE_HOME, else the "
        "repository).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = out.add_subparsers(dest="command", metavar="command", required=True)
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.summary, add_help=False)
    return out


def main(argv: list[str] | None = None) -> None:
    """Pick the command, then hand the rest of the line to it (its own --help included)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        parser().parse_args(argv)  # prints the usage (--help, or an unknown command) and exits
        return
    name, rest = argv[0], [a for a in argv[1:] if a != "--debug"]  # run_main reads --debug itself
    try:
        refuse_held_folder(COMMANDS[name], rest)
        function, errors = command_main(name)
    except (FileNotFoundError, FolderLockedError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    run_main(lambda: function(rest), errors=errors)


if __name__ == "__main__":
    main()
