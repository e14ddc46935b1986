"""The kit's main job (`make demo`): the embedded-default pipeline end to end, offline, on a CPU.

Captioned Shapes -> tiny-encoder feature cache -> language-free LAFITE training -> evaluation
against the real-image and shuffled-condition baselines -> a reduced perturbation ablation ->
a prompt grid with seen and held-out (zero-shot) shape/colour pairs. Every step is one of the
kit's notebooks executed by the runner, so each leaves its executed notebook and log under
results/runs/, and running the demo again skips what already finished (an interrupted training
resumes from its last checkpoint). Tables, plots and grids are copied into `out_dir`.

    python -m lafite_core.demo                              # params/demo.yaml, about 20 min on 2 cores
    python -m lafite_core.demo --params params/demo_smoke.yaml   # a minute or two: the test suite's preset
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from lafite_core import runner
from lafite_core.config import DemoConfig, from_dict, to_dict
from lafite_core.runner import RunSpec

NOTEBOOKS = Path("notebooks")


def embed_spec(cfg: DemoConfig) -> RunSpec:
    return RunSpec(str(NOTEBOOKS / "01_embed.ipynb"), to_dict(cfg.embed), sweep="demo-embed")


def train_params(cfg: DemoConfig) -> dict:
    """The main training run reads the demo's cache and the demo's data settings."""
    return {**to_dict(cfg.train), "cache": cfg.embed.cache_dir, "data": to_dict(cfg.embed.data)}


def train_spec(cfg: DemoConfig) -> RunSpec:
    return RunSpec(str(NOTEBOOKS / "02_train.ipynb"), train_params(cfg), sweep="demo-train")


def evaluate_spec(cfg: DemoConfig, train: RunSpec) -> RunSpec:
    checkpoint = runner.run_dir(train, Path(cfg.results_root)) / "out"
    params = {**to_dict(cfg.evaluate), "checkpoint": str(checkpoint), "results_dir": cfg.out_dir}
    return RunSpec(str(NOTEBOOKS / "04_evaluate.ipynb"), params, sweep="demo-evaluate")


def ablation_specs(cfg: DemoConfig) -> list[RunSpec]:
    """One 03_ablation run per case: the main training config, shortened, with the case's overrides."""
    base_train = {**train_params(cfg), "total_kimg": cfg.ablation_kimg}
    base_eval = runner.deep_merge(to_dict(cfg.evaluate), cfg.ablation_evaluate)
    specs = []
    for case in cfg.ablation_cases:
        params = {"train": base_train, "evaluate": base_eval}
        label = {"case": case.get("name", "unnamed")}
        for key, value in case.items():
            if key != "name":
                params = runner.set_dotted(params, f"train.{key}", value)
                label[key] = value
        specs.append(RunSpec(str(NOTEBOOKS / "03_ablation.ipynb"), params, sweep="demo-ablation", label=label,
                             order=len(specs)))
    return specs


def samples_spec(cfg: DemoConfig, train: RunSpec) -> RunSpec:
    checkpoint = runner.run_dir(train, Path(cfg.results_root)) / "out"
    params = {"checkpoint": str(checkpoint), "prompts": cfg.prompts, "n": cfg.samples_per_prompt, "seed": 0}
    return RunSpec(str(NOTEBOOKS / "05_sample.ipynb"), params, sweep="demo-samples")


def _run(specs: list[RunSpec], cfg: DemoConfig, what: str) -> None:
    started = time.time()
    print(f"\n== {what}", flush=True)
    outcomes = runner.run_all(specs, Path(cfg.results_root), workers=cfg.workers)
    failed = [o for o in outcomes if o["status"] != "done"]
    if failed:
        details = "; ".join(f"{o['run_id']}: {o.get('error')} (see {o.get('executed_notebook')})" for o in failed)
        raise RuntimeError(f"demo step '{what}' failed: {details}")
    print(f"   {what}: {time.time() - started:.0f} s", flush=True)


def run_demo(cfg: DemoConfig) -> Path:
    """Run every step (skipping finished ones) and write `out_dir/summary.md`; returns its path."""
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    started = time.time()
    train, ablation = train_spec(cfg), ablation_specs(cfg)
    _run([embed_spec(cfg)], cfg, "embed Captioned Shapes with the tiny encoder")
    _run([train, *ablation], cfg, f"train the main model and {len(ablation)} ablation points")
    _run([evaluate_spec(cfg, train)], cfg, "evaluate the main model against the baselines")
    _run([samples_spec(cfg, train)], cfg, "draw the prompt grid")
    return write_summary(cfg, train, ablation, time.time() - started)


def write_summary(cfg: DemoConfig, train: RunSpec, ablation: list[RunSpec], seconds: float) -> Path:
    out, results = Path(cfg.out_dir), Path(cfg.results_root)
    train_out = runner.run_dir(train, results) / "out"
    for name in ("stats.png", "grid-final.png"):
        for found in sorted(train_out.glob(name)):
            shutil.copy(found, out / f"train-{found.name}")
    shutil.copy(runner.run_dir(samples_spec(cfg, train), results) / "out" / "grid.png", out / "samples.png")
    lines = [f"# Embedded-default demo (this invocation: {seconds / 60:.1f} min; finished steps are skipped)", ""]
    eval_table = out / f"{cfg.evaluate.table}.csv"
    if eval_table.is_file():
        lines += ["## Main model against the baselines", "", headline_table(eval_table), "",
                  f"Every column, the protocol included: {eval_table.name} / {eval_table.with_suffix('.md').name}", ""]
    if ablation:
        runner.collect("demo-ablation", results, out_dir=out, name="ablation")
        lines += ["## Perturbation ablation (shorter runs)", "", (out / "ablation.md").read_text(), "",
                  "![ablation](ablation.png)", "",
                  "Every perturbation, longer runs: `python -m lafite_core.runner run params/ablation.yaml` "
                  "then `python -m lafite_core.runner collect ablation` (the kit's own: results/ablation.md).", ""]
    lines += ["## Prompts (the last rows are held-out shape/colour pairs)", "", "![samples](samples.png)", "",
              f"Run folders (executed notebooks, logs, checkpoints): {results / 'runs'}"]
    summary = out / "summary.md"
    summary.write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"minutes": round(seconds / 60, 2), "train_run": str(train_out),
                                                  "ablation_runs": [s.run_id for s in ablation]}, indent=2))
    return summary


HEADLINE = ["subject", "eval_split", "num_samples", "clip_fid", "clip_score", "r_precision", "caption_accuracy"]


def headline_table(csv_path: Path) -> str:
    """The few columns a reader compares first, as Markdown."""
    import pandas as pd

    table = pd.read_csv(csv_path)
    return table[[c for c in HEADLINE if c in table.columns]].to_markdown(index=False, floatfmt=".4g")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lafite_core.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params/demo.yaml", help="a DemoConfig params file")
    args = parser.parse_args(argv)
    cfg = from_dict(DemoConfig, runner.load_params(args.params))
    summary = run_demo(cfg)
    print(f"\nDone. Summary: {summary}\nTables and pictures: {summary.parent}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
