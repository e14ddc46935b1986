"""The optional torch.compile (lafite_core/compiled.py): the same images as eager, one warning and
eager results where compiling is unavailable, and a training step with every phase under
TrainConfig.compile. Only the generator test pays for inductor; the training step compiles with
aot_eager, which cannot differentiate twice either, so R1 or path length through a compiled pass
would fail it."""

import math
import shutil
import warnings

import pytest
import torch
from torch._dynamo.utils import counters
from training_fixtures import FEATURE_DIM, TinyImageTextSet, tiny_config

from lafite_core.compiled import CompileUnavailableWarning, compile_or_eager
from lafite_core.networks import Generator
from lafite_core.training import Trainer


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """No compiled code or counts carried between tests (compiled code is cached per function)."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.fixture
def aot_eager(monkeypatch) -> list:
    """torch.compile with the aot_eager backend (autograd graphs like inductor's, no C++ build);
    returns the list of what was compiled."""
    compiled, real = [], torch.compile

    def compile_(fn):
        compiled.append(fn)
        return real(fn, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_)
    return compiled


def compile_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, CompileUnavailableWarning)]


@pytest.mark.slow
@pytest.mark.skipif(not any(map(shutil.which, ("g++", "clang++", "c++"))), reason="inductor needs a C++ compiler")
def test_compiled_generator_draws_the_eager_images():
    torch.manual_seed(0)
    G = Generator(tiny_config("unused").network, FEATURE_DIM).eval().requires_grad_(False)
    keys = list(G.state_dict())
    z, c = torch.randn(3, G.z_dim), torch.nn.functional.normalize(torch.randn(3, FEATURE_DIM), dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileUnavailableWarning)
        images = compile_or_eager(G, True, "the generator")(z, c, noise_mode="const")
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo traced it: the compiled code ran
    assert (images - G(z, c, noise_mode="const")).abs().max() < 1e-4
    assert list(G.state_dict()) == keys  # what a checkpoint saves


def test_disabled_returns_the_function_itself():
    layer = torch.nn.Linear(4, 3)
    assert compile_or_eager(layer, False, "the layer") is layer


def test_without_a_cxx_compiler_it_warns_once_and_runs_eagerly(monkeypatch):
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/c++",))
    layer = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())  # tanh needs a C++ kernel
    run = compile_or_eager(layer, True, "the layer")
    x = torch.randn(2, 4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        outputs = [run(x) for _ in range(3)]
    (message,) = compile_warnings(record)
    assert "the layer" in message and "C++ compiler" in message
    assert all(torch.equal(out, layer(x)) for out in outputs)
    assert list(layer.state_dict()) == ["0.weight", "0.bias"]


def test_where_torch_compile_raises_it_warns_once_and_returns_the_function(monkeypatch):
    def unavailable(fn):
        raise RuntimeError("torch.compile is not supported here")

    monkeypatch.setattr(torch, "compile", unavailable)
    layer = torch.nn.Linear(4, 3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run = compile_or_eager(layer, True, "the layer")
        run(torch.randn(2, 4))
        run(torch.randn(2, 4))
    assert run is layer
    assert compile_warnings(record) == [
        "torch.compile of the layer is unavailable (torch.compile is not supported here); running it eagerly"
    ]


def test_an_error_of_the_function_itself_is_raised_without_a_warning(aot_eager):
    def positive(x):
        if x.shape[0] == 0:
            raise ValueError("empty batch")
        return x.abs() + 1

    run = compile_or_eager(positive, True, "positive")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="empty batch"):
            run(torch.zeros(0, 2))
        assert torch.equal(run(torch.tensor([-2.0])), torch.tensor([3.0]))
    assert compile_warnings(record) == []


def one_step(run_dir, compile_: bool) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Step 0 of the tiny run (every phase: pl_interval 2, r1_interval 4): its terms and G after it."""
    trainer = Trainer(tiny_config(run_dir, compile=compile_), TinyImageTextSet())
    try:
        return trainer.train_step(next(trainer.batches)), trainer.G.state_dict()
    finally:
        trainer.close()


@pytest.mark.slow
def test_a_compiled_training_step_runs_every_phase_and_equals_the_eager_one(tmp_path, aot_eager):
    eager_terms, eager_G = one_step(tmp_path / "eager", False)
    assert aot_eager == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileUnavailableWarning)
        terms, G = one_step(tmp_path / "compiled", True)
    assert [getattr(fn, "__name__", type(fn).__name__) for fn in aot_eager] == ["mapping", "synthesis", "Discriminator"]
    assert counters["stats"]["unique_graphs"] >= 3  # the main passes ran compiled
    assert {"G_adv", "G_pl", "D_adv", "D_r1"} <= set(terms) and all(math.isfinite(v) for v in terms.values())
    assert all(abs(terms[k] - v) <= 1e-5 * max(1.0, abs(v)) for k, v in eager_terms.items())
    assert list(G) == list(eager_G) and all((G[k] - v).abs().max() <= 1e-5 for k, v in eager_G.items())
