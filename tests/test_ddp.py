"""Two gloo processes on CPU: the same weights on both ranks after training, contrastive negatives
gathered across ranks give the gradient of the full global batch, and one step of the real G and D
with averaged gradients gives the gradients of one process computing the whole global batch."""

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow  # two training processes

TESTS = Path(__file__).resolve().parent


def _gathered_gradient_matches_full_batch(rank: int, world: int) -> dict:
    """Each rank holds 3 of the 6 samples; compare with one process computing all 6."""
    from lafite_core.conditions import GatheredNegativesLoss
    from lafite_core.config import LossConfig
    from lafite_core.distributed import Distributed, average_gradients
    from lafite_core.losses import contrastive_loss

    g = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(6, 5, generator=g), torch.randn(6, 4, generator=g)
    weight = torch.nn.Linear(5, 4, bias=False)
    torch.nn.init.normal_(weight.weight, generator=g)
    cfg = LossConfig(temperature=0.5, contrastive_lam=0.3)
    here = slice(3 * rank, 3 * rank + 3)

    loss = GatheredNegativesLoss(None, None, None, cfg, Distributed(rank, world, torch.device("cpu")))
    value = loss._contrastive(weight(inputs[here]), targets[here]).mean()
    value.backward()
    average_gradients(weight, Distributed(rank, world, torch.device("cpu")), sanitize=False)
    gathered_grad = weight.weight.grad.clone()

    weight.zero_grad()
    full = contrastive_loss(weight(inputs), targets, cfg.temperature, lam=cfg.contrastive_lam).mean()
    full.backward()
    return {
        "value": value.item(),
        "full_value": full.item(),
        "grad_error": (gathered_grad - weight.weight.grad).abs().max().item(),
    }


MBSTD_GROUP = 4  # NetworkConfig's default minibatch-stddev group


def _mbstd_share(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's share of a global batch, chosen so that its minibatch-stddev groups are groups of
    the global batch: a group is a column of the batch laid out as [group, N / group] (samples i,
    i + N/group, ...), so each rank takes whole columns. Then D sees in each process exactly what
    it sees in the single process, and the gradients must agree."""
    columns = x.reshape(MBSTD_GROUP, -1, *x.shape[1:]).chunk(world, dim=1)[rank]
    return columns.reshape(-1, *x.shape[1:])


def _tiny_network():
    from training_fixtures import tiny_config

    network = tiny_config("unused").network
    assert network.mbstd_group_size == MBSTD_GROUP
    return network


def _logistic_step_gradients(z, c, real, processes) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of one logistic G step and one logistic D step with R1 on freshly
    seeded networks, averaged over `processes`. Constant noise and no style mixing: each image
    depends on its own latent only."""
    from training_fixtures import FEATURE_DIM

    from lafite_core.distributed import average_gradients
    from lafite_core.losses import discriminator_adversarial_loss, generator_adversarial_loss, r1_penalty
    from lafite_core.networks import Discriminator, Generator

    torch.manual_seed(0)
    G, D = Generator(_tiny_network(), FEATURE_DIM), Discriminator(_tiny_network(), FEATURE_DIM)
    D.requires_grad_(False)
    fake = G(z, c, noise_mode="const")
    generator_adversarial_loss(D(fake, c)[0]).mean().backward()
    average_gradients(G, processes, sanitize=False)

    G.requires_grad_(False)
    D.requires_grad_(True)
    real = real.detach().requires_grad_(True)
    real_logits, _ = D(real, c)
    fake_logits, _ = D(fake.detach(), c)
    (discriminator_adversarial_loss(real_logits, fake_logits) + r1_penalty(real, real_logits)).mean().backward()
    average_gradients(D, processes, sanitize=False)
    return {f"{name}.{k}": p.grad for name, net in (("G", G), ("D", D)) for k, p in net.named_parameters()}


def _ddp_step_matches_single_process(rank: int, world: int) -> dict[str, float]:
    """Each rank holds 4 of the 8 samples; returns, per parameter, max |DDP - single process| over
    the largest gradient of the single process."""
    from training_fixtures import FEATURE_DIM

    from lafite_core.distributed import Distributed

    network, n, g = _tiny_network(), 4 * world, torch.Generator().manual_seed(1)
    z = torch.randn(n, network.z_dim, generator=g)
    c = torch.nn.functional.normalize(torch.randn(n, FEATURE_DIM, generator=g), dim=1)
    real = torch.rand(n, 3, network.resolution, network.resolution, generator=g) * 2 - 1
    cpu = torch.device("cpu")
    here = [_mbstd_share(x, rank, world) for x in (z, c, real)]
    shared = _logistic_step_gradients(*here, Distributed(rank, world, cpu))
    single = _logistic_step_gradients(z, c, real, Distributed(0, 1, cpu))
    return {k: ((shared[k] - v).abs().max() / v.abs().max()).item() for k, v in single.items()}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    sys.path.insert(0, str(TESTS))
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from training_fixtures import TinyImageTextSet, tiny_config

        from lafite_core.training import Trainer

        check = _gathered_gradient_matches_full_batch(rank, world)
        check["step_grad_errors"] = _ddp_step_matches_single_process(rank, world)
        cfg = tiny_config(out_dir, gather_negatives=True, total_kimg=0.008, seed=3)
        trainer = Trainer(cfg, TinyImageTextSet())
        assert trainer.batch_per_process == 2
        trainer.run()
        torch.save(
            {
                "G": trainer.G.state_dict(),
                "D": trainer.D.state_dict(),
                "G_ema": trainer.G_ema.state_dict(),
                "check": check,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_processes_end_with_identical_weights(tmp_path, free_port):
    mp.spawn(_worker, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    final = torch.load(sorted((tmp_path / "checkpoints").glob("checkpoint-*.pt"))[-1], weights_only=True)
    assert final["world_size"] == 2 and len(final["rng"]) == 2  # both ranks' RNG states saved
    assert not torch.equal(final["rng"][0]["cpu"], final["rng"][1]["cpu"])  # ranks draw differently
    for net in ("G", "D", "G_ema"):
        for name, value in ranks[0][net].items():
            assert torch.equal(value, ranks[1][net][name]), f"{net}.{name} differs between ranks"
    assert all(torch.equal(v, final["G"][k]) for k, v in ranks[0]["G"].items())  # what rank 0 saved
    for r in ranks:
        check = r["check"]
        assert abs(check["value"] - check["full_value"]) < 1e-6  # each rank reports the global mean
        assert check["grad_error"] < 1e-6
        errors = check["step_grad_errors"]
        assert any(k.startswith("G.") for k in errors) and any(k.startswith("D.") for k in errors)
        for name, error in errors.items():
            assert error < 1e-5, f"{name}: DDP gradient differs from the single process's by {error:.2e} of its scale"
