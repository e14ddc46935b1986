"""Converting the authors' snapshot pickles: the result samples like the source, and nothing in a
pickle runs.

How the fixture is made: the authors' code pickles every network module as a call
`torch_utils.persistence._reconstruct_persistent_obj(meta)` (meta: type, version, module_src,
class_name, state = the module's `__dict__`). Here a `pickle.Pickler` whose `reducer_override`
turns each `OfficialModule` stand-in into exactly that call writes the file, with a kit network's
tensors laid out under the authors' module names (written out below, independently of the
converter). Pickle stores a function by module and name and checks that it can find it again, so
while the file is written, stand-in `torch_utils.persistence` and `dnnlib.util` modules sit in
`sys.modules`; they are removed before the file is read. Tensors are pickled by torch itself
(`_rebuild_parameter`, `_rebuild_tensor_v2`, storages via `_load_from_bytes`) and the float
attributes are numpy scalars, so the file holds the same globals as a snapshot the authors' code
writes (the test checks the set).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from training_fixtures import TinyImageTextSet, tiny_config

from lafite_core.config import EncoderConfig, NetworkConfig, to_dict
from lafite_core.convert import convert_snapshot, main
from lafite_core.networks import Discriminator, Generator
from lafite_core.restricted_unpickler import RefusedPickle
from lafite_core.sampler import Sampler, load_generator
from lafite_core.training import Trainer

TINY = EncoderConfig(name="lafite-tiny", pretrained="lafite_core/assets/lafite-tiny-shapes.safetensors")
F_DIM = 128  # the tiny encoder's feature size
CFG = NetworkConfig(
    resolution=32, z_dim=32, w_dim=32, feature_dim=F_DIM, mapping_layers=3, channel_base=256, channel_max=16, change=16
)
OFFICIAL_GLOBALS = {
    "torch_utils.persistence._reconstruct_persistent_obj",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.storage._load_from_bytes",
    "collections.OrderedDict",
    "numpy.dtype",
    f"{np.float64(0).__reduce__()[0].__module__}.scalar",  # numpy.core or numpy._core, as numpy writes it
    "dnnlib.util.EasyDict",  # the authors' train.py passes constructor kwargs as EasyDicts
}
# The authors' style submodules per structure, and the kit's names for them.
STYLES = {
    2: {"pre_0": "condition_mlp.0", "pre_1": "condition_mlp.1", "affine_0": "affine"},
    1: {"affine": "affine", **{f"{k}_layer_{i}": f"{k}_mlp.{i}" for k in ("scale", "bias") for i in range(3)}},
}
SLOW = {"pre_0", "pre_1", "scale_layer_0", "scale_layer_1", "bias_layer_0", "bias_layer_1"}  # lr multiplier 0.01


# ------------------------------------------------------------------------------ the fixture
class OfficialModule:
    """Stand-in for one of the authors' persistent modules: a class name and a module __dict__."""

    def __init__(self, class_name, params=(), buffers=(), modules=(), **attrs):
        self.class_name = class_name
        self.state = {
            "training": False,
            "_parameters": collections.OrderedDict((k, torch.nn.Parameter(v.clone())) for k, v in dict(params).items()),
            "_buffers": collections.OrderedDict((k, v.clone()) for k, v in dict(buffers).items()),
            "_non_persistent_buffers_set": set(),
            "_modules": collections.OrderedDict(modules),
            "_forward_hooks": collections.OrderedDict(),
            **attrs,
        }


def _reconstruct_persistent_obj(meta):  # only its name is pickled; never called
    raise AssertionError("the stand-in persistence function must not run")


class EasyDict(dict):
    pass


class OfficialPickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, OfficialModule):
            meta = dict(
                type="class", version=4, module_src="raise SystemExit('never run')\n", class_name=obj.class_name
            )
            return _reconstruct_persistent_obj, (dict(meta, state=obj.state),)
        return NotImplemented


def _stand_in_modules() -> dict[str, types.ModuleType]:
    found = {}
    for name, attrs in {
        "torch_utils": {},
        "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
        "dnnlib": {},
        "dnnlib.util": {"EasyDict": EasyDict},
    }.items():
        module = types.ModuleType(name)
        for key, value in attrs.items():
            value.__module__, value.__qualname__ = name, key
            setattr(module, key, value)
        found[name] = module
    return found


def write_official_pickle(obj, path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for name, module in _stand_in_modules().items():
            mp.setitem(sys.modules, name, module)
        with open(path, "wb") as f:
            OfficialPickler(f, protocol=4).dump(obj)


def _fc(sd, prefix, lr=1.0, activation="linear"):
    w = sd[f"{prefix}.weight"]
    return OfficialModule(
        "FullyConnectedLayer",
        {"weight": w, "bias": sd[f"{prefix}.bias"]},
        activation=activation,
        weight_gain=np.float64(lr / np.sqrt(w.shape[1])),
        bias_gain=lr,
    )


def _filter():
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(f, f) / torch.outer(f, f).sum()


def official_generator(G: Generator) -> OfficialModule:
    sd, cfg = G.state_dict(), G.cfg
    fcs = {f"fc{i}": _fc(sd, f"mapping_network.layers.{i}", 0.01, "lrelu") for i in range(cfg.mapping_layers)}
    mapping = OfficialModule("MappingNetwork", buffers={"w_avg": sd["mapping_network.w_avg"]}, modules=fcs)
    blocks = {}
    for index, block in enumerate(G.synthesis_network.blocks):
        res, pre = block.resolution, f"synthesis_network.blocks.{index}"
        structure = 2 if res <= cfg.change else 1
        layers = {}
        for name in ("conv0", "conv1", "torgb"):
            if f"{pre}.{name}.weight" not in sd:
                continue
            own = {
                k: sd[f"{pre}.{name}.{k}"] for k in ("weight", "bias", "noise_strength") if f"{pre}.{name}.{k}" in sd
            }
            styles = {
                theirs: _fc(sd, f"{pre}.{name}.style.{ours}", 0.01 if theirs in SLOW else 1.0)
                for theirs, ours in STYLES[structure].items()
            }
            buffers = {"resample_filter": _filter()} if name != "torgb" else {}
            if name != "torgb":
                buffers["noise_const"] = sd[f"{pre}.{name}.noise_const"]
            layers[name] = OfficialModule(
                "ToRGBLayer" if name == "torgb" else "SynthesisLayer",
                own,
                buffers,
                styles,
                structure=structure,
                conv_clamp=cfg.conv_clamp,
                resolution=res,
            )
        const = {"const": sd[f"{pre}.const"]} if f"{pre}.const" in sd else {}
        blocks[f"b{res}"] = OfficialModule(
            "SynthesisBlock", const, {"resample_filter": _filter()}, layers, use_fp16=False, architecture="skip"
        )
    synthesis = OfficialModule("SynthesisNetwork", modules=blocks, _init_kwargs=EasyDict(change=cfg.change))
    return OfficialModule(
        "Generator", modules={"synthesis": synthesis, "mapping": mapping}, synthesis_kwargs=EasyDict(), mani=None
    )


def _conv(sd, prefix):
    params = {k: sd[f"{prefix}.{k}"] for k in ("weight", "bias") if f"{prefix}.{k}" in sd}
    return OfficialModule("Conv2dLayer", params, {"resample_filter": _filter()}, conv_clamp=None)


def official_discriminator(D: Discriminator) -> OfficialModule:
    sd = D.state_dict()
    blocks = {}
    for index, block in enumerate(D.blocks):
        names = [n for n in ("fromrgb", "conv0", "conv1", "skip") if f"blocks.{index}.{n}.weight" in sd]
        layers = {n: _conv(sd, f"blocks.{index}.{n}") for n in names}
        blocks[f"b{block.resolution}"] = OfficialModule(
            "DiscriminatorBlock", buffers={"resample_filter": _filter()}, modules=layers
        )
    epilogue = {
        "mbstd": OfficialModule("MinibatchStdLayer", group_size=4, num_channels=1),
        "conv": _conv(sd, "epilogue.conv"),
    }
    epilogue.update(
        {n: _fc(sd, f"epilogue.{n}", activation="lrelu" if n == "fc" else "linear") for n in ("fc", "out", "fts")}
    )
    blocks["b4"] = OfficialModule("DiscriminatorEpilogue", modules=epilogue)
    return OfficialModule("Discriminator", modules=blocks, use_norm=False, use_fts=True)


@pytest.fixture(scope="module")
def source():
    """Kit networks with non-trivial weights everywhere (their images are what conversion must keep)."""
    torch.manual_seed(0)
    G, D = Generator(CFG, F_DIM).eval(), Discriminator(CFG, F_DIM).eval()
    with torch.no_grad():
        for name, p in list(G.named_parameters()) + list(D.named_parameters()):
            if name.endswith(("bias", "noise_strength")):
                p.normal_(0, 0.1)
        G.mapping_network.w_avg.normal_(0, 0.1)
    G_ema = Generator(CFG, F_DIM).eval()
    return G, D, G_ema


@pytest.fixture(scope="module")
def snapshot(source, tmp_path_factory) -> Path:
    G, D, G_ema = source
    path = tmp_path_factory.mktemp("official") / "network-snapshot-000120.pkl"
    snap = {"training_set_kwargs": {"path": "x.zip", "xflip": False}, "augment_pipe": None}
    snap.update(G=official_generator(G), D=official_discriminator(D), G_ema=official_generator(G_ema))
    write_official_pickle(snap, path)
    return path


def pickle_globals(data: bytes) -> set[str]:
    """Every module.name a protocol-4 pickle asks for (strings may come back from the memo)."""
    memo, strings, found, top = [], [], set(), None
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE"):
            top = arg
            strings.append(arg)
        elif op.name == "MEMOIZE":
            memo.append(top)
        elif op.name in ("BINGET", "LONG_BINGET"):
            top = memo[arg]
            if isinstance(top, str):
                strings.append(top)
        else:
            top = None
            if op.name == "STACK_GLOBAL":
                found.add(f"{strings[-2]}.{strings[-1]}")
    return found


# ------------------------------------------------------------------------------ conversion
def test_fixture_holds_exactly_the_official_globals(snapshot):
    assert pickle_globals(snapshot.read_bytes()) == OFFICIAL_GLOBALS
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


def test_converted_snapshot_samples_like_its_source_and_keeps_d(source, snapshot, tmp_path):
    G, D, G_ema = source
    written = convert_snapshot(snapshot, tmp_path / "g.safetensors", TINY, training_checkpoint=tmp_path / "ckpt")
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    assert written["network"] == to_dict(CFG)  # every size inferred from the shapes, change included

    loaded, info = load_generator(written["generator"])
    assert info["encoder_identity"]["name"] == "lafite-tiny" and info["encoder_identity"]["weights_sha256"]
    assert info["nimg"] == 120_000 and written["checkpoint"].name == "checkpoint-0000120000.pt"  # kimg of the name
    z, c = torch.randn(3, CFG.z_dim), torch.nn.functional.normalize(torch.randn(3, F_DIM), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, c, noise_mode="const"), G_ema(z, c, noise_mode="const"), rtol=0, atol=0)
        assert not torch.equal(G(z, c, noise_mode="const"), G_ema(z, c, noise_mode="const"))

    images = Sampler.load(written["generator"]).generate(["a red circle", "a blue square"], n=2, seed=1)
    assert images.shape == (4, 3, 32, 32) and torch.isfinite(images).all()

    # the training checkpoint starts a run (fine_tune_from) with the snapshot's G, D and G_ema
    run = tiny_config(tmp_path / "run", encoder=TINY, network=CFG, fine_tune_from=str(written["checkpoint"]))
    trainer = Trainer(run, TinyImageTextSet(feature_dim=F_DIM))
    with torch.no_grad():
        img = G(z, c, noise_mode="const")
        torch.testing.assert_close(trainer.G(z, c, noise_mode="const"), img, rtol=0, atol=0)
        torch.testing.assert_close(trainer.D.eval()(img, c), D(img, c), rtol=0, atol=0)
        torch.testing.assert_close(trainer.G_ema(z, c, noise_mode="const"), G_ema(z, c, noise_mode="const"))


def test_command_line_writes_the_generator(snapshot, tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    assert main([str(snapshot), str(out), "--encoder", TINY.name, "--pretrained", TINY.pretrained]) == 0
    assert out.is_file() and "32 px" in capsys.readouterr().out


def test_encoder_with_another_feature_size_is_refused(snapshot, tmp_path):
    with pytest.raises(ValueError, match="512-d features.*128-d"):
        convert_snapshot(snapshot, tmp_path / "g.safetensors", EncoderConfig(name="ViT-B-32", pretrained="openai"))
    assert not (tmp_path / "g.safetensors").exists()


# ------------------------------------------------------------------------------ safety
class SystemCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class FileWrite:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return exec, (f"open({str(self.path)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("where", ["top level", "inside a module's state"])
def test_malicious_pickles_are_refused_and_nothing_runs(snapshot, source, tmp_path, where):
    marker_shell, marker_exec = tmp_path / "shell-ran", tmp_path / "exec-ran"
    payloads = {
        f"{os.system.__module__}.system": SystemCall(f"touch {marker_shell}"),
        "builtins.exec": FileWrite(marker_exec),
    }
    for name, payload in payloads.items():
        path = tmp_path / "evil.pkl"
        if where == "top level":
            path.write_bytes(pickle.dumps({"G_ema": payload}))
        else:
            G = official_generator(source[0])
            G.state["_init_kwargs"] = {"hook": payload}
            write_official_pickle({"G_ema": G}, path)
        with pytest.raises(RefusedPickle, match=f"refused global {name}"):
            convert_snapshot(path, tmp_path / "g.safetensors", TINY)
    assert not marker_shell.exists() and not marker_exec.exists()
    assert not (tmp_path / "g.safetensors").exists()


def test_truncated_file_and_other_pickles_give_clear_errors(snapshot, tmp_path):
    data = snapshot.read_bytes()
    cases = {
        "truncated.pkl": (data[: len(data) // 2], "snapshot = .* appears to be a Python pickle but is incomplete"),
        "list.pkl": (pickle.dumps([1, 2, 3]), "not a LAFITE snapshot"),
        "dict.pkl": (pickle.dumps({"G": 1, "weights": np.zeros(2).tolist()}), "not a LAFITE snapshot"),
        "text.pkl": (b"hello, I am not a pickle", "snapshot = .* is not a weights file: it appears to be text"),
    }
    buffer = io.BytesIO()
    torch.save({"G_ema": {}}, buffer)
    cases["checkpoint.pt"] = (buffer.getvalue(), "zip archive")
    assert zipfile.is_zipfile(io.BytesIO(buffer.getvalue()))
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=message):
            convert_snapshot(tmp_path / name, tmp_path / "g.safetensors", TINY)


def test_a_persistent_id_is_refused(tmp_path):
    class WithPersistentId(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage-0" if isinstance(obj, str) and obj == "x" else None

    buffer = io.BytesIO()
    WithPersistentId(buffer).dump({"G_ema": "x"})
    (tmp_path / "pid.pkl").write_bytes(buffer.getvalue())
    with pytest.raises(RefusedPickle, match="persistent id"):
        convert_snapshot(tmp_path / "pid.pkl", tmp_path / "g.safetensors", TINY)
