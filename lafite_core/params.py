"""Params files and overrides: the one YAML loader of the kit, `extends`, deep merge, dotted
overrides, and the command-line parts every `lafite` command shares.

A params file states only what differs from the dataclass defaults in lafite_core.config;
`config.from_dict` fills in the rest (a nested section given in part is merged over the
parent's default for that section). Every error names the file and the parameter.

OmegaConf's structured configs would give merging and dotted overrides too, but not the
kit's one-line errors naming file and key for a wrong type inside a Literal/Union, and they
add a dependency for about a hundred lines of code.

Relative paths in params mean the kit's home (`kit_home`): `LAFITE_HOME` when set, else the
repository that holds lafite_core. A notebook's kernel works there (`from_namespace` moves it), so
a path means the same from JupyterLab (kernel in notebooks/), papermill in any folder and the runner
(which sets LAFITE_HOME to its own working directory for its kernels).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import traceback
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from lafite_core.config import PRESET_KEY, deep_merge, from_dict

C = TypeVar("C")

HOME_VARIABLE = "LAFITE_HOME"
LINE_LIMIT = 120  # pyproject.toml's ruff line-length: a longer parameters-cell line would be rewrapped

# The errors an entry point reports as one line (bad params, missing files): anything else is a bug
# and keeps its traceback.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, KeyError)


def load_params(path: str | Path) -> dict[str, Any]:
    """A YAML params file as a dict. `extends: other.yaml` (relative to the file) loads that file
    first and overrides it; it may stand at the top or inside any section (`train: {extends: train.yaml}`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path.resolve()}")
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
    data = apply_overrides({**(load_params(params) if params else {}), **(replace or {})}, overrides)
    try:
        return from_dict(cls, data)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{params}: {err}" if params else str(err)) from None


def kit_home() -> Path:
    """Where relative paths in params point: $LAFITE_HOME, else the repository holding lafite_core
    (a folder with notebooks/ and params/ next to the package), else the working directory."""
    declared = os.environ.get(HOME_VARIABLE)
    if declared:
        return Path(declared).expanduser().resolve()
    repository = Path(__file__).resolve().parents[1]
    if (repository / "notebooks").is_dir() and (repository / "params").is_dir():
        return repository
    return Path.cwd()


def from_namespace(cls: type[C], namespace: dict[str, Any]) -> C:
    """A notebook's config: the params file named by its `params` variable (None: the dataclass
    defaults) over the `preset` variable's recipe (`cls.PRESETS`, if any), then every variable named
    like a field of `cls` (what papermill or the runner injects, or the user sets in the parameters
    cell; `...` means "not given").

    First the kernel moves to `kit_home()`, so relative paths mean the same wherever the kernel
    started. papermill's `-p` gives strings: a list or section field given as a string is read as
    YAML/JSON (`-p prompts '["a red star", "a blue cross"]'`)."""
    os.chdir(kit_home())
    hints = typing.get_type_hints(cls)
    given = {f.name: namespace[f.name] for f in dataclasses.fields(cls) if namespace.get(f.name, ...) is not ...}
    given = {name: _parse_structured(name, value, hints[name]) for name, value in given.items()}
    if hasattr(cls, "PRESETS") and namespace.get(PRESET_KEY, ...) is not ...:
        given[PRESET_KEY] = namespace[PRESET_KEY]  # the runner injects a params file's `preset` as a variable
    path = namespace.get("params")
    data = load_params(path) if path else {}
    data = deep_merge(data, given)
    try:
        return from_dict(cls, data)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: {err}" if path else str(err)) from None


def _is_structured(hint: Any) -> bool:
    """A list, dict or section type (possibly inside Optional)."""
    if dataclasses.is_dataclass(hint) or typing.get_origin(hint) in (list, tuple, dict):
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and any(
        _is_structured(h) for h in typing.get_args(hint)
    )


def _parse_structured(name: str, value: Any, hint: Any) -> Any:
    """A string given for a list/dict/section field, read as YAML (JSON is YAML); errors show the -y form."""
    if not isinstance(value, str) or not _is_structured(hint):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ValueError(f"parameter {name} = {value!r} is not valid YAML/JSON ({err.problem})") from None
    if isinstance(parsed, (list, dict)):
        return parsed
    raise TypeError(
        f"parameter {name} = {value!r} must be a list or mapping; with papermill give it as YAML: "
        f"-p {name} '[\"a\", \"b\"]' or -y '{name}: [a, b]'"
    )


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`key.sub=value` command-line overrides (values parsed as YAML) applied to params data."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value (e.g. a.b=10)")
        data = set_dotted(data, key.strip(), yaml.safe_load(value))
    return data


class OneLineError:
    """A mixin for errors whose message says what to do: Jupyter shows `Name: message` alone, not
    a traceback through the kit (`%tb` still shows it)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class DefaultsShown(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default in (None, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def command_parser(name: str, description: str | None) -> argparse.ArgumentParser:
    """The parser of `lafite <name>`: its usage line names the command people type, not the module."""
    prog = f"lafite {name}".strip()  # "": a module whose sub-parsers are the commands (lafite run, lafite collect)
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=DefaultsShown)


def add_params_arguments(parser: argparse.ArgumentParser, what: str, example: str) -> None:
    """The `--params FILE` and repeatable `--set KEY=VALUE` options that load_with_overrides reads."""
    parser.add_argument("--params", help=f"YAML params file ({what} fields; default: none, the {what} defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one parameter (the value is read as YAML; repeatable; default: none), e.g. --set {example}",
    )


def run_main(main: Callable[[], int | None], errors: tuple[type[BaseException], ...] = INPUT_ERRORS) -> None:
    """The `if __name__ == "__main__":` body of every entry point: exits with main's status; bad input
    (`errors`) prints one `error: ...` line and exits 2 (`--debug` anywhere on the command line, or
    LAFITE_DEBUG=1, shows the traceback too); Ctrl-C exits 130."""
    debug = "--debug" in sys.argv
    if debug:  # taken off before main's own parser sees the line
        sys.argv.remove("--debug")
    try:
        status = main()
    except KeyboardInterrupt:
        sys.exit(130)
    except errors as err:
        if debug or os.environ.get("LAFITE_DEBUG"):
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)


# ----------------------------------------------------------------------------- notebook parameters cells
def parameters_cell(cls: type) -> str:
    """The `parameters` cell of a notebook bound to `cls`: `params` plus one annotated line per field,
    each `...` (not given: the dataclass default, stated in the comment), so `papermill --help-notebook`
    lists names, types and defaults while the defaults stay in lafite_core.config alone."""
    hints = typing.get_type_hints(cls)
    notes = _field_comments(cls)
    lines = [
        f"# Parameters of lafite_core.config.{cls.__name__}: set `params` to a params file and/or any field",
        "# below (`...` = the default named in its comment; a section given in part keeps its other defaults).",
        "# Relative paths mean the kit's home (LAFITE_HOME, else the repository). Papermill and the runner",
        "# inject their values below this cell.",
        "from typing import Optional  # for the annotations, which papermill --help-notebook shows",
        "",
        "params: Optional[str] = None  # a YAML params file (e.g. one in params/); None: the defaults",
    ]
    if hasattr(cls, "PRESETS"):
        lines.append(
            f"{PRESET_KEY}: Optional[str] = ...  # a recipe the params file starts from ({cls.__name__}.PRESETS)"
        )
    for f in dataclasses.fields(cls):
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else ()
        one_of = "one of " + " | ".join(map(str, choices)) if choices else ""
        note = "; ".join(x for x in (f"default {_default_text(f)}", one_of, notes.get(f.name)) if x)
        note = note.replace(" = ", ": ").replace("=", ":")  # papermill skips a line with a second "="
        line = f"{f.name}: {_annotation(hints[f.name])} = ...  # {note}"
        lines.append(line if len(line) <= LINE_LIMIT else line[: LINE_LIMIT - 3] + "...")  # ruff's line length
    return "\n".join(lines)


def _annotation(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "dict"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return type(args[0]).__name__
    if origin in (list, tuple):
        inner = _annotation(args[0]) if args else "Any"
        return f"list[{inner}]"
    if origin is dict:
        return "dict"
    if origin in (typing.Union, types.UnionType):
        kept = [h for h in args if h is not type(None)]
        inner = _annotation(kept[0]) if len(kept) == 1 else "Any"
        return f"Optional[{inner}]" if type(None) in args else inner
    return getattr(hint, "__name__", "Any")


def _default_text(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        value = f.default
    else:
        return ""
    if dataclasses.is_dataclass(value):
        return f"{type(value).__name__} section"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_comments(cls: type) -> dict[str, str]:
    """The `# ...` comment on each field's line in cls's source, as its help text."""
    import inspect  # only the cell generator reads source

    notes = {}
    for line in inspect.getsource(cls).splitlines():
        name, sep, rest = line.strip().partition(":")
        if sep and name.isidentifier() and "#" in rest:
            notes[name] = rest.split("#", 1)[1].strip()
    return notes
