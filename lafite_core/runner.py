"""Run parameterised notebooks headlessly with Papermill: params files, sweeps, workers, results.

A notebook declares in its metadata which config dataclass its parameters cell mirrors
(`metadata.lafite.config`, a class name in `lafite_core.config`) and which field names its output
folder (`metadata.lafite.output`). That lets the runner reject unknown keys and wrong types
*before* a kernel starts, and give every run its own folder `results/runs/<run-id>/`.

Run ids are stable hashes of (notebook, params), so re-running a sweep skips finished runs and
re-executes unfinished ones (the training notebook resumes from its last checkpoint).

Each run folder is locked while its run executes (run_lock.py), so a second runner on the same
sweep skips it with an error naming the holder. Each run's processes get their own process group;
SIGINT or SIGTERM to the runner reaches every run (training checkpoints, then stops), runs still
going after STOP_GRACE_S are killed, unfinished runs are recorded as `interrupted`, and the runner
exits 130 (SIGINT) or 143 (SIGTERM) with no process of its runs left.

    python -m lafite_core.runner run params/ablation.yaml --workers 2
    python -m lafite_core.runner collect ablation
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import psutil
import yaml

from lafite_core import config as config_module
from lafite_core.params import HOME_VARIABLE, DefaultsShown, command_parser, load_params, run_main, set_dotted
from lafite_core.progress import tqdm
from lafite_core.reporting import plot_sweep, sweep_markdown
from lafite_core.run_lock import FolderLockedError, RunLock

RESULTS = Path("results")
CELL_LINE = re.compile(r"Executing Cell (\d+)-")  # papermill's log line as a cell starts
KERNEL_START_ERRORS = ("Address already in use", "Kernel died before replying", "Kernel didn't respond")
STOP_GRACE_S = 20.0  # after SIGINT/SIGTERM: time the runs get to write a final checkpoint before being killed


# ----------------------------------------------------------------------------- runs and sweeps
@dataclass
class RunSpec:
    notebook: str
    params: dict[str, Any]
    sweep: str = "adhoc"
    label: dict[str, Any] = field(default_factory=dict)  # the swept values, for tables
    order: int = 0  # place in its sweep, so tables list runs as the sweep file does (not in run_id)

    @property
    def run_id(self) -> str:
        blob = json.dumps({"notebook": Path(self.notebook).as_posix(), "params": self.params}, sort_keys=True)
        return f"{Path(self.notebook).stem}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def expand_sweep(path: str | Path) -> list[RunSpec]:
    """A sweep file: `notebook`, optional `name`, `params` (a params file or inline mapping),
    `cases` (a list of named override sets: {name: ..., dotted.key: value, ...}) and `grid`
    (dotted key -> list of values). Runs are cases x grid's cartesian product."""
    path = Path(path)
    spec = load_params(path)
    unknown = set(spec) - {"notebook", "name", "params", "grid", "cases"}
    if unknown:
        raise ValueError(
            f"{path}: unknown sweep key {sorted(unknown)[0]!r}; known: cases, grid, name, notebook, params"
        )
    if "notebook" not in spec:
        raise ValueError(f"{path}: a sweep needs a 'notebook'")
    base = spec.get("params") or {}
    if isinstance(base, str):
        base = load_params(path.parent / base)
    grid = spec.get("grid") or {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: grid.{key} must be a non-empty list")
    cases = spec.get("cases") or [{}]
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise ValueError(f"{path}: cases must be a list of mappings")
    name = spec.get("name", path.stem)
    runs = []
    for case in cases:
        for combo in itertools.product(*grid.values()):
            params, label = base, {}
            if "name" in case:
                label["case"] = case["name"]
            for key, value in [*((k, v) for k, v in case.items() if k != "name"), *zip(grid, combo)]:
                params = set_dotted(params, key, value)
                label[key] = value
            runs.append(RunSpec(notebook=spec["notebook"], params=params, sweep=name, label=label, order=len(runs)))
    return runs


def notebook_binding(notebook: str | Path) -> tuple[type, str | None]:
    """The config dataclass ("Class" in lafite_core.config, or "module:Class") and output field
    a notebook declares in metadata.lafite."""
    nb = json.loads(Path(notebook).read_text())
    meta = nb.get("metadata", {}).get("lafite", {})
    name = meta.get("config")
    if not name:
        raise ValueError(f"{notebook}: metadata.lafite.config is missing (the config class its parameters mirror)")
    module_name, _, cls_name = name.rpartition(":")
    module = importlib.import_module(module_name) if module_name else config_module
    cls = getattr(module, cls_name, None)
    if cls is None or not dataclasses.is_dataclass(cls):
        raise ValueError(f"{notebook}: metadata.lafite.config names unknown config class {name!r}")
    return cls, meta.get("output")


def validate(spec: RunSpec) -> None:
    """Reject unknown keys and wrong types before any kernel starts."""
    if not Path(spec.notebook).is_file():
        raise FileNotFoundError(f"notebook not found: {spec.notebook}")
    cls, _ = notebook_binding(spec.notebook)
    try:
        config_module.from_dict(cls, spec.params)
    except (TypeError, ValueError) as err:
        raise type(err)(f"run {spec.run_id} ({spec.notebook}): {err}") from None


# ----------------------------------------------------------------------------- execution
def run_dir(spec: RunSpec, results: Path = RESULTS) -> Path:
    return results / "runs" / spec.run_id


def read_status(folder: Path) -> dict[str, Any]:
    path = folder / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {"status": "new"}


def _write_status(folder: Path, **fields: Any) -> None:
    status = {**read_status(folder), **fields}
    tmp = folder / "status.json.tmp"
    tmp.write_text(json.dumps(status, indent=2, default=str))
    os.replace(tmp, folder / "status.json")


def prepare(spec: RunSpec, results: Path = RESULTS) -> tuple[Path, dict[str, Any]]:
    """Create the run folder and the exact parameters the kernel will get."""
    folder = run_dir(spec, results)
    folder.mkdir(parents=True, exist_ok=True)
    _, output_field = notebook_binding(spec.notebook)
    params = dict(spec.params)
    if output_field:
        params[output_field] = str((folder / "out").resolve())
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "spec.json").write_text(
        json.dumps(
            {
                "notebook": spec.notebook,
                "sweep": spec.sweep,
                "label": spec.label,
                "order": spec.order,
                "params": spec.params,
            },
            indent=2,
        )
    )
    return folder, params


def execute(
    spec: RunSpec,
    results: Path = RESULTS,
    env: dict[str, str] | None = None,
    retries: int = 3,
    processes: RunProcesses | None = None,
) -> dict[str, Any]:
    """Execute one run in a child process (so CUDA_VISIBLE_DEVICES reaches its kernel) and record
    its status; kernel start failures (port races) are retried, other failures recorded. The run
    folder is locked meanwhile: a folder another process holds raises FolderLockedError."""
    processes = processes or RunProcesses()
    with RunLock(run_dir(spec, results), "runner"):
        folder, params = prepare(spec, results)
        if processes.signum is not None:  # stopping: start nothing new
            _write_status(folder, status="interrupted", error=processes.stop_message())
            return read_status(folder)
        _write_status(folder, status="running", started=time.time(), notebook=spec.notebook, error=None)
        cmd = [sys.executable, "-m", "lafite_core.runner", "_execute", spec.notebook, str(folder)]
        # the kernel resolves relative paths against LAFITE_HOME (params.kit_home): here, the runner's own folder;
        # its text progress bars (lafite_core/progress.py) write a log line every few seconds, not ten a second
        child_env = {HOME_VARIABLE: os.getcwd(), "TQDM_MININTERVAL": "5", **os.environ, **(env or {})}
        for attempt in range(1, retries + 1):
            with open(folder / "log.txt", "a") as log:
                log.write(f"--- attempt {attempt}\n")
                log.flush()
                returncode = processes.run(cmd, env=child_env, stdout=log, stderr=subprocess.STDOUT)
            if returncode == 0:
                _write_status(folder, status="done", finished=time.time(), attempts=attempt)
                return read_status(folder)
            tail = (folder / "log.txt").read_text()[-4000:]
            if returncode < 0 or processes.signum is not None or not any(m in tail for m in KERNEL_START_ERRORS):
                break
            time.sleep(1 + attempt)
        stopped = returncode < 0 or processes.signum is not None
        _write_status(
            folder,
            status="interrupted" if stopped else "failed",
            finished=time.time(),
            attempts=attempt,
            error=processes.stop_message() if processes.signum is not None else _last_error(folder / "log.txt"),
            executed_notebook=str(folder / "notebook.ipynb"),
        )
        return read_status(folder)


class RunsInterrupted(KeyboardInterrupt):
    """The runner stopped its runs on SIGINT or SIGTERM; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class RunProcesses:
    """The child processes of the runs in progress, each in its own process group (and its kernel
    in another, as jupyter_client starts kernels in a new session), so that a stop signal reaches
    all of them, and whatever outlives STOP_GRACE_S is killed."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entered when a second signal interrupts kill()
        self._running: set[subprocess.Popen] = set()
        self._groups: set[int] = set()  # every process group seen in a run's tree
        self.signum: int | None = None

    def run(self, cmd: list[str], **popen_kwargs: Any) -> int:
        """Run `cmd` in a new session (its own process group) and return its exit status."""
        with self._lock:
            proc = subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)
            self._running.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._running.discard(proc)

    def stop_message(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}; run again to resume"

    @contextmanager
    def stopping_on_signals(self, grace_s: float = STOP_GRACE_S) -> Iterator[None]:
        """While the block runs, SIGINT and SIGTERM are forwarded to every run and, after `grace_s`,
        the runs still going are killed (a second signal kills at once). On leaving, any process
        left in a run's groups is killed and RunsInterrupted raised. Main thread only."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        timer = threading.Timer(grace_s, self.kill)
        timer.daemon = True

        def handle(signum: int, frame) -> None:
            if self.signum is not None:
                self.kill()
                return
            self.signum = signum
            print(f"{signal.Signals(signum).name}: stopping the runs (killed after {grace_s:g} s)", flush=True)
            self.send(signum)
            timer.start()

        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            timer.cancel()
            if self.signum is not None:
                self.kill()
        if self.signum is not None:
            raise RunsInterrupted(self.signum)

    def send(self, signum: int) -> None:
        """Signal every process group of every run in progress (never the runner's own)."""
        for group in self._current_groups():
            _signal_group(group, signum)

    def kill(self) -> None:
        """SIGKILL every process group of the runs, in progress or seen before."""
        groups = self._current_groups()
        with self._lock:
            groups |= self._groups
        for group in groups:
            _signal_group(group, signal.SIGKILL)

    def _current_groups(self) -> set[int]:
        with self._lock:
            roots = [p.pid for p in self._running]
        groups = set()
        for pid in roots:
            try:
                tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in tree:
                try:
                    groups.add(os.getpgid(proc.pid))
                except ProcessLookupError:
                    pass
        groups.discard(os.getpgrp())
        with self._lock:
            self._groups |= groups
        return groups


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _last_error(log: Path) -> str:
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "Exception" in ln]
    return (errors or lines or ["unknown error"])[-1][:500]


def _execute_in_child(notebook: str, folder: str) -> None:
    """Child-process body: papermill with the prepared params, output next to the log. Its logger
    prints each cell as it starts and every output (messages, progress bars) as it arrives, with a
    time, to this process's stdout: the run's log.txt. A stop signal (the runner sends it to the
    kernel too) must not tear papermill down while the kernel writes its checkpoint: papermill
    waits for the interrupted cell, saves the notebook and exits."""
    import papermill as pm  # optional (the notebooks extra): only the kernel-starting child needs it

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)  # a Python handler, so the kernel (exec'd) keeps the default
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    folder_path = Path(folder)
    params = yaml.safe_load((folder_path / "params.yaml").read_text()) or {}
    pm.execute_notebook(
        notebook,
        str(folder_path / "notebook.ipynb"),
        parameters=params,
        kernel_name="python3",
        progress_bar=False,
        log_output=True,
        cwd=os.getcwd(),
    )


def visible_gpus() -> list[str]:
    """GPU ids this process may use, without initialising CUDA here: CUDA_VISIBLE_DEVICES when
    set, else what nvidia-smi lists."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [g.strip() for g in declared.split(",") if g.strip() and g.strip() != "-1"]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def worker_envs(workers: int | None, gpus: list[str] | None = None, cores: int | None = None) -> list[dict[str, str]]:
    """One worker per GPU, each seeing only its own; without GPUs, `workers` CPU workers that share
    the cores (each torch would otherwise start a thread per core, and N workers oversubscribe them)."""
    gpus = visible_gpus() if gpus is None else gpus
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": g} for g in gpus[: workers or len(gpus)]]
    count = workers or 1
    threads = str(max(1, (cores or os.cpu_count() or 1) // count))
    return [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads} for _ in range(count)]


def pending(specs: list[RunSpec], results: Path, force: bool = False) -> list[RunSpec]:
    """Validate every run (before any kernel starts) and drop the finished ones."""
    for spec in specs:
        validate(spec)
    return [s for s in specs if force or read_status(run_dir(s, results)).get("status") != "done"]


def run_all(
    specs: list[RunSpec],
    results: Path = RESULTS,
    workers: int | None = None,
    force: bool = False,
    backend: str = "local",
    ray_address: str | None = None,
) -> list[dict]:
    """Execute the unfinished runs on local workers or on a Ray cluster; returns their statuses."""
    todo = pending(specs, results, force)
    print(f"{len(specs)} runs: {len(specs) - len(todo)} already done, {len(todo)} to run ({backend})", flush=True)
    if backend == "ray":
        return _run_on_ray(todo, results, ray_address)
    if backend != "local":
        raise ValueError(f"unknown backend {backend!r}; known: local, ray")
    return _run_locally(todo, results, worker_envs(workers), RunProcesses())


class RunLine:
    """One terminal line per running run: its id, the notebook cell it executes and its latest
    output line, read from its log.txt every `every` seconds (the whole log stays in the file)."""

    def __init__(self, spec: RunSpec, results: Path, position: int, every: float = 1.0):
        self.log, self.every = run_dir(spec, results) / "log.txt", every
        cells = len(json.loads(Path(spec.notebook).read_text())["cells"]) + 1  # and papermill's injected one
        self.bar = tqdm(total=cells, desc=spec.run_id, unit="cell", position=position, leave=False)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> "RunLine":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.update()
        self.bar.close()

    def _follow(self) -> None:
        while not self.stop.wait(self.every):
            self.update()

    def update(self) -> None:
        """Show the newest cell number and output line of the log's last part."""
        cell, latest = log_progress(self.log)
        if cell is not None:
            self.bar.n = cell
        if latest:
            self.bar.set_postfix_str(latest[-60:], refresh=False)
        self.bar.refresh()


def log_progress(log: Path, tail: int = 8192) -> tuple[int | None, str]:
    """(the cell papermill executes, the latest output line) from the end of a run's log.txt."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail))
            lines = f.read().decode(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return None, ""
    cells = [int(m.group(1)) for m in map(CELL_LINE.search, lines) if m]
    outputs = [ln.strip() for ln in lines if ln.strip() and not CELL_LINE.search(ln) and "Ending Cell" not in ln]
    return (cells[-1] if cells else None), (outputs[-1] if outputs else "")


def _progress(total: int):
    return tqdm(total=total, desc="runs")


def _run_locally(todo: list[RunSpec], results: Path, envs: list[dict[str, str]], processes: RunProcesses) -> list[dict]:
    """Runs on worker threads, each starting one run's process at a time; SIGINT/SIGTERM stop them
    all (RunProcesses.stopping_on_signals). A run whose folder another process holds is reported
    as `locked`, and its folder left as that process keeps it."""
    free = list(range(len(envs)))  # worker slots; list pop/append are atomic under the GIL

    def job(spec: RunSpec) -> dict:
        slot = free.pop()
        try:
            with RunLine(spec, results, position=slot + 1):  # below the "runs" bar
                return {"run_id": spec.run_id, **execute(spec, results, envs[slot], processes=processes)}
        except FolderLockedError as err:
            return {"run_id": spec.run_id, "status": "locked", "error": str(err)}
        finally:
            free.append(slot)

    outcomes: list[dict] = []
    with processes.stopping_on_signals(), ThreadPoolExecutor(len(envs)) as pool, _progress(len(todo)) as bar:
        for fut in as_completed([pool.submit(job, s) for s in todo]):
            outcomes.append(fut.result())
            bar.set_postfix_str(f"{outcomes[-1]['run_id']}: {outcomes[-1]['status']}")
            bar.update()
    return outcomes


def _run_on_ray(todo: list[RunSpec], results: Path, address: str | None) -> list[dict]:
    """One Ray task per run, each holding one GPU when the cluster has GPUs (Ray then sets
    CUDA_VISIBLE_DEVICES for the task, and the kernel inherits it). `results` must be on a
    file system every node sees."""
    import ray  # optional (the ray extra) and slow to import: only Ray runs need it

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    task = ray.remote(num_gpus=1 if has_gpus else 0, num_cpus=1, max_retries=0)(_ray_task)
    refs = {task.remote(spec, str(results.resolve())): spec for spec in todo}
    outcomes: list[dict] = []
    with _progress(len(todo)) as bar:
        remaining = list(refs)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            outcomes.append(ray.get(done[0]))
            bar.set_postfix_str(f"{outcomes[-1]['run_id']}: {outcomes[-1]['status']}")
            bar.update()
    return outcomes


def _ray_task(spec: RunSpec, results: str) -> dict:
    return {"run_id": spec.run_id, **execute(spec, Path(results))}


# ----------------------------------------------------------------------------- results
def collect(sweep: str, results: Path = RESULTS, out_dir: Path | None = None, name: str | None = None):
    """Gather metrics.json of every run of a sweep into <out_dir>/<name>.csv (every column), .md and
    .png (for reading: lafite_core/reporting.py) (default: results/<sweep>.*)."""
    rows = []  # (place in the sweep, row)
    for spec_path in sorted((results / "runs").glob("*/spec.json")):
        spec = json.loads(spec_path.read_text())
        if spec.get("sweep") != sweep:
            continue
        folder = spec_path.parent
        status = read_status(folder)
        row = {"run_id": folder.name, **spec.get("label", {}), "status": status.get("status")}
        metrics_path = folder / "out" / "metrics.json"
        if metrics_path.is_file():
            row.update(json.loads(metrics_path.read_text()))
        rows.append(((spec.get("order", 0), status.get("started") or 0.0), row))  # older runs: by start time
    if not rows:
        raise ValueError(f"no runs of sweep {sweep!r} under {results / 'runs'}")
    table = pd.DataFrame([row for _, row in sorted(rows, key=lambda pair: pair[0])])
    folder, stem = Path(out_dir or results), name or sweep
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / f"{stem}.csv", index=False)  # every column
    (folder / f"{stem}.md").write_text(sweep_markdown(table))  # the case, its headline metrics, chance, a verdict
    plot_sweep(table, folder / f"{stem}.png")
    return table


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("", __doc__.split("\n\n")[0])  # its sub-commands are `lafite run` and `lafite collect`
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a sweep file or a notebook", formatter_class=DefaultsShown)
    run.add_argument("sweep_or_notebook", help="a sweep file (params/*.yaml with `sweep:`) or a notebook (.ipynb)")
    run.add_argument("--params", help="params file for a single notebook (default: none, the notebook's defaults)")
    run.add_argument("--workers", type=int, help="runs at once (default: one per GPU, else one)")
    run.add_argument("--force", action="store_true", help="re-run finished runs too")
    run.add_argument("--results", default=str(RESULTS), help="folder of run folders (runs/) and tables")
    run.add_argument("--backend", choices=["local", "ray"], default="local", help="where runs execute")
    run.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    col = sub.add_parser(
        "collect", help="gather a sweep's metrics into <results>/<sweep>.csv/.md/.png", formatter_class=DefaultsShown
    )
    col.add_argument("sweep", help="the sweep's name (its params file's stem, e.g. ablation)")
    col.add_argument("--results", default=str(RESULTS), help="folder holding runs/ and the tables")
    child = sub.add_parser("_execute")
    child.add_argument("notebook")
    child.add_argument("folder")
    args = parser.parse_args(argv)

    if args.command == "_execute":
        _execute_in_child(args.notebook, args.folder)
        return 0
    results = Path(args.results)
    if args.command == "collect":
        print(collect(args.sweep, results).to_string(index=False))
        return 0
    target = Path(args.sweep_or_notebook)
    if target.suffix == ".ipynb":
        params = load_params(args.params) if args.params else {}
        specs = [RunSpec(notebook=str(target), params=params)]
    else:
        specs = expand_sweep(target)
    try:
        outcomes = run_all(specs, results, args.workers, args.force, args.backend, args.ray_address)
    except RunsInterrupted as stop:
        print(f"interrupted ({stop}): unfinished runs are marked interrupted; run again to resume", flush=True)
        return 128 + stop.signum
    return report_outcomes(outcomes)


def report_outcomes(outcomes: list[dict]) -> int:
    """Print every run that did not finish here and return the exit status: 0 when each run is
    done or `locked` (held by another live runner, which finishes it), else 1."""
    failed = 0
    for o in outcomes:
        if o["status"] == "locked":
            print(f"locked {o['run_id']}: {o.get('error')}")
        elif o["status"] != "done":
            failed += 1
            see = f" (see {o['executed_notebook']})" if o.get("executed_notebook") else ""
            print(f"FAILED {o['run_id']}: {o.get('error')}{see}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main, errors=(Exception,))
