"""One point of the perturbation ablation (paper Sec. 4.4, Table 6): train, then evaluate.

The sweep file params/ablation.yaml turns this into the paper's comparison on the embedded
default: no perturbation, Gaussian noise at several xi, the official interpolation, the learned
perturbation, and language-free against standard (captioned) training. The runner executes one
notebooks/03_ablation.ipynb per point and collects each point's metrics.json into one table.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from lafite_core.config import AblationConfig, EvalConfig, TrainConfig
from lafite_core.evaluation import evaluate
from lafite_core.training import train


def wire(cfg: AblationConfig) -> tuple[TrainConfig, EvalConfig]:
    """Point training and evaluation at folders inside this point's output folder, so parallel
    points never write to the same run folder or results table."""
    out = Path(cfg.output_dir)
    train_cfg = replace(cfg.train, run_dir=str(out / "train"))
    eval_cfg = replace(
        cfg.evaluate, checkpoint=train_cfg.run_dir, output_dir=str(out / "eval"), results_dir=str(out / "eval")
    )
    return train_cfg, eval_cfg


def train_and_evaluate(cfg: AblationConfig, progress: bool = True) -> dict:
    """Train (resuming if this point was interrupted), evaluate, and write `output_dir/metrics.json`:
    the setting and perturbation of the point next to the model's metrics per split."""
    train_cfg, eval_cfg = wire(cfg)
    train(train_cfg)
    evaluate(eval_cfg, progress=progress)
    model_metrics = json.loads((Path(eval_cfg.output_dir) / "metrics.json").read_text())
    metrics = {
        "setting": train_cfg.setting,
        "perturbation": train_cfg.perturbation.kind,
        "xi": train_cfg.perturbation.xi if train_cfg.perturbation.kind == "gaussian" else None,
        **{k: v for k, v in model_metrics.items() if "/" in k and k.count("/") == 1},
    }
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
