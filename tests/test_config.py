"""The schema (lafite_core/config.py): strict loading that names the bad parameter, sections given
in part, and the named training recipes (TrainConfig.PRESETS)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from lafite_core import augment, conditions, config
from lafite_core.config import EmbedConfig, EvalConfig, TrainConfig, from_dict
from lafite_core.params import from_namespace, load_params, load_with_overrides, load_yaml
from lafite_core.training import load_train_config, main as train_main

REPO = Path(__file__).resolve().parents[1]


def differing_fields(a, b, prefix: str = "") -> set[str]:
    """The dotted names of the fields where two configs differ, section fields one by one."""
    out = set()
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(x):
            out |= differing_fields(x, y, f"{prefix}{f.name}.")
        elif x != y:
            out.add(f"{prefix}{f.name}")
    return out


# ------------------------------------------------------------------------------ bad parameters
@pytest.mark.parametrize(
    "cls, overrides, message",
    [
        (
            TrainConfig,
            ["perturbation.kind=gausian"],
            "perturbation.kind = 'gausian' is not allowed; did you mean 'gaussian'?",
        ),
        (
            EmbedConfig,
            ["data.kind=imagefolder"],
            "data.kind = 'imagefolder' is not allowed; did you mean 'image_folder'?",
        ),
        (
            EvalConfig,
            ["metrics=[clip_fid, clipscore]"],
            "metrics = 'clipscore' is not allowed; did you mean 'clip_score'?",
        ),
        (
            TrainConfig,
            ["setting=languagefree"],
            "setting = 'languagefree' is not allowed; did you mean 'language_free'?",
        ),
        (
            TrainConfig,
            ["diffaugment=[colour]"],
            "diffaugment = 'colour' is not allowed; did you mean 'color'\\? allowed: color, translation, cutout",
        ),
        (
            TrainConfig,
            ["encoder.precision=fp61"],
            "encoder.precision = 'fp61' is not allowed; .*allowed: fp32, fp16, bf16",
        ),
        (
            TrainConfig,
            ["network.resolution=16", "data.resolution=16"],
            "network.resolution = 16 must be a power of two from 32 to 1024",
        ),
        (TrainConfig, ["g_lr=.nan"], "parameter g_lr = nan must be a finite number"),
        (TrainConfig, ["betas=[0.0, .inf]"], "parameter betas = inf must be a finite number"),
        (TrainConfig, ["perturbation.image_alpha=1.5"], "perturbation.image_alpha = 1.5 must be in \\[0, 1\\]"),
        (TrainConfig, ["loss.temperature=0"], "loss.temperature = 0.0 must be positive"),
    ],
)
def test_bad_parameters_fail_at_load_naming_the_parameter(cls, overrides, message):
    with pytest.raises(ValueError, match=message):
        load_with_overrides(cls, None, overrides)


def test_literal_choices_are_the_registries_names():
    """setting and diffaugment list their choices in the schema; they must be what is registered."""
    hints = typing.get_type_hints(TrainConfig)
    assert set(typing.get_args(hints["setting"])) == set(conditions.SETTINGS.names())
    assert set(typing.get_args(typing.get_args(hints["diffaugment"])[0])) == set(augment.AUGMENTATIONS.names())


@pytest.mark.parametrize(
    "params, message",
    [
        ({"batch_sise": 4}, "unknown parameter 'batch_sise'"),
        ({"total_kimg": "ten"}, "parameter total_kimg = 'ten' has type str"),
        ({"network": {"resolution": 48}, "data": {"resolution": 48}}, "network.resolution = 48 must be a power of two"),
        ({"network": {"resolution": 64}}, "data.resolution = 32 differs from network.resolution = 64"),
        ({"setting": "semi"}, "parameter setting = 'semi'"),
        ({"diffaugment": ["color", "zoom"]}, "parameter diffaugment"),
        ({"betas": [0.0, 1.5]}, "parameter betas"),
        ({"max_minutes": 0}, "parameter max_minutes = 0"),
        ({"mixed_precision": True}, "network.num_fp16_res"),
        ({"loss": {"r1_interval": 0}}, "loss.r1_interval = 0 must be positive"),
    ],
)
def test_bad_parameters_fail_with_the_parameter_name(params, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(".", r"\.")):
        from_dict(TrainConfig, params)


# ------------------------------------------------------------------------------ sections
def test_a_section_given_in_part_is_merged_over_the_parents_default(tmp_path):
    (tmp_path / "p.yaml").write_text("network: {z_dim: 32}\n")
    train = load_with_overrides(config.TrainConfig, tmp_path / "p.yaml", ["data.size=64"])
    default = config.TrainConfig()
    assert train.network.z_dim == 32 and default.network.z_dim != 32
    assert train.network == config.NetworkConfig(**{**config.to_dict(default.network), "z_dim": 32})
    assert train.network.channel_base != config.NetworkConfig().channel_base  # the parent's, not the class's
    assert train.data == config.DataConfig(size=64)
    demo = config.from_dict(
        config.DemoConfig, {"train": {"loss": {"r1_gamma": 2.0}}, "evaluate": {"data": {"size": 10}}}
    )
    assert demo.train.loss == config.LossConfig(**{**config.to_dict(default.loss), "r1_gamma": 2.0})
    assert demo.evaluate.data == config.DataConfig(**{**config.to_dict(config.EvalConfig().data), "size": 10})
    with pytest.raises(ValueError, match="p.yaml: unknown parameter network.'z_dimm'"):
        (tmp_path / "p.yaml").write_text("network: {z_dimm: 32}\n")
        load_with_overrides(config.TrainConfig, tmp_path / "p.yaml", [])


# ------------------------------------------------------------------------------ presets
def test_the_defaults_are_the_recipe_that_train_yaml_and_make_demo_train():
    default = TrainConfig()
    assert differing_fields(load_yaml(REPO / "params" / "train.yaml", TrainConfig), default) == set()
    assert differing_fields(from_dict(TrainConfig, {"preset": "shapes32"}), default) == set()
    demo = from_dict(config.DemoConfig, load_params(REPO / "params" / "demo.yaml")).train
    assert differing_fields(demo, default) == {"run_dir", "max_minutes", "total_kimg"}  # the budget, not the recipe
    assert from_dict(config.DemoConfig, {}).train == default  # 02_train's and the demo's defaults alike
    assert (default.g_lr, default.d_lr, default.network.z_dim, default.perturbation.kind) == (0.01, 0.01, 64, "none")


@pytest.mark.parametrize("name", sorted(TrainConfig.PRESETS))
def test_every_preset_validates_and_a_file_naming_it_states_only_what_differs(name, tmp_path):
    preset = from_dict(TrainConfig, {"preset": name})
    assert preset.network.resolution == preset.data.resolution
    (tmp_path / "p.yaml").write_text(f"preset: {name}\nnetwork: {{z_dim: 32}}\nloss: {{r1_gamma: 0.5}}\n")
    cfg = load_yaml(tmp_path / "p.yaml", TrainConfig)
    assert differing_fields(preset, cfg) == {
        "network.z_dim",
        "loss.r1_gamma",
    }  # a section given in part keeps the preset's rest


def test_paper256_is_the_papers_model_and_the_official_runs_add_the_authors_quirks():
    paper = from_dict(TrainConfig, {"preset": "paper256"})
    assert (paper.network.resolution, paper.network.z_dim, paper.network.channel_base) == (256, 512, 32768)
    assert (paper.encoder.name, paper.perturbation.kind, paper.loss.contrastive_form) == (
        "ViT-B-32",
        "official",
        "infonce",
    )
    assert (paper.g_lr, paper.batch_size, paper.loss.r1_gamma) == (0.0025, 64, 10.0)
    official = from_dict(TrainConfig, {"preset": "official_coco_language_free"})
    assert differing_fields(paper, official) == {
        "loss.contrastive_form",
        "loss.clip_view",
        "perturbation.redraw",
        "data.kind",
        "data.root",
        "cache",
        "run_dir",
        "ema_kimg",  # the same half-life as the default's formula at batch 64, stated as the authors do
        "progress_prompts",
    }


def test_a_preset_names_the_base_of_a_section_and_a_bad_name_lists_the_presets():
    ablation = from_dict(config.AblationConfig, {"train": {"preset": "paper256", "total_kimg": 1.0}})
    assert ablation.train == dataclasses.replace(from_dict(TrainConfig, {"preset": "paper256"}), total_kimg=1.0)
    with pytest.raises(ValueError, match="preset = 'paper265' is not allowed; did you mean 'paper256'"):
        from_dict(TrainConfig, {"preset": "paper265"})
    with pytest.raises(ValueError, match="unknown parameter 'preset' for EmbedConfig"):
        from_dict(EmbedConfig, {"preset": "paper256"})


def test_the_command_line_and_the_notebook_take_a_preset(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("preset: official_cub\ntotal_kimg: 2\n")
    cfg = load_train_config(tmp_path / "p.yaml", ["seed=3"], preset="paper256")  # --preset replaces the file's
    assert differing_fields(from_dict(TrainConfig, {"preset": "paper256"}), cfg) == {"total_kimg", "seed"}
    injected = from_namespace(TrainConfig, {"params": str(tmp_path / "p.yaml"), "preset": "paper256", "seed": 3})
    assert injected == cfg
    assert from_namespace(TrainConfig, {"preset": ...}) == TrainConfig()
    with pytest.raises(SystemExit):
        train_main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in TrainConfig.PRESETS), out
