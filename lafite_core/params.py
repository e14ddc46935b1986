"""Params files and overrides: the one YAML loader of the kit, `extends`, deep merge, dotted
overrides, and the error handling every `python -m lafite_core.*` entry point shares.

A params file states only what differs from the dataclass defaults in lafite_core.config;
`config.from_dict` fills in the rest (a nested section given in part is merged over the
parent's default for that section). Every error names the file and the parameter.

OmegaConf's structured configs would give merging and dotted overrides too, but not the
kit's one-line errors naming file and key for a wrong type inside a Literal/Union, and they
add a dependency for about a hundred lines of code.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from lafite_core.config import from_dict

C = TypeVar("C")

# The errors an entry point reports as one line (bad params, missing files): anything else is a bug
# and keeps its traceback.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, KeyError)


def deep_merge(base: dict, override: dict) -> dict:
    """Nested dict merge where `override` wins; dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_params(path: str | Path) -> dict[str, Any]:
    """A YAML params file as a dict. `extends: other.yaml` (relative to the file) loads that file
    first and overrides it; it may stand at the top or inside any section (`train: {extends: train.yaml}`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameters, got {type(data).__name__}")
    return _resolve_extends(data, path.parent)


def _resolve_extends(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    data = {k: _resolve_extends(v, folder) if isinstance(v, dict) else v for k, v in data.items()}
    parent = data.pop("extends", None)
    return data if parent is None else deep_merge(load_params(folder / parent), data)


def set_dotted(params: dict, dotted: str, value: Any) -> dict:
    """params with `a.b.c` set to value (intermediate dicts created)."""
    out = copy.deepcopy(params)
    node = out
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {dotted!r}: {key!r} is not a mapping")
    node[leaf] = value
    return out


def load_yaml(path: str | Path, cls: type[C]) -> C:
    """Load one params file (with `extends`) into `cls`; the file name appears in every error."""
    return load_with_overrides(cls, path, [])


def load_with_overrides(
    cls: type[C], params: str | Path | None, overrides: list[str], replace: dict[str, Any] | None = None
) -> C:
    """A command line's config: a params file (with `extends`), whole sections from `replace`
    (e.g. a protocol preset), then `key.sub=value` overrides (values parsed as YAML). Errors name
    the file and the parameter."""
    data = {**(load_params(params) if params else {}), **(replace or {})}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value (e.g. a.b=10)")
        data = set_dotted(data, key.strip(), yaml.safe_load(value))
    try:
        return from_dict(cls, data)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{params}: {err}" if params else str(err)) from None


def from_namespace(cls: type[C], namespace: dict[str, Any]) -> C:
    """A notebook's config: the params file named by its `params` variable (None: the dataclass
    defaults), then every variable named like a field of `cls` (what papermill or the runner
    injects, or the user sets in the parameters cell)."""
    names = [f.name for f in dataclasses.fields(cls)]
    path = namespace.get("params")
    data = load_params(path) if path else {}
    data = deep_merge(data, {n: namespace[n] for n in names if n in namespace})
    try:
        return from_dict(cls, data)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: {err}" if path else str(err)) from None


def add_params_arguments(parser: argparse.ArgumentParser, what: str, example: str) -> None:
    """The `--params FILE` and repeatable `--set KEY=VALUE` options that load_with_overrides reads."""
    parser.add_argument("--params", help=f"YAML params file ({what} fields)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one parameter (the value is read as YAML), e.g. --set {example}",
    )


def run_main(main: Callable[[], int | None], errors: tuple[type[BaseException], ...] = INPUT_ERRORS) -> None:
    """The `if __name__ == "__main__":` body of every entry point: exits with main's status; bad input
    (`errors`) prints one `error: ...` line and exits 2 (LAFITE_DEBUG=1 shows the traceback); Ctrl-C exits 130."""
    try:
        status = main()
    except KeyboardInterrupt:
        sys.exit(130)
    except errors as err:
        if os.environ.get("LAFITE_DEBUG"):
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
