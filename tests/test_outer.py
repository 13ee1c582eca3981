"""The outer optimisers: the functional Adam step equals torch.optim.Adam (with clipping and a
cosine schedule), the SGD step equals torch.optim.SGD, and the config resolves and validates the
outer optimiser options with clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from compressdata.distiller.checkpoint import DistillState, load_checkpoint, save_checkpoint
from compressdata.distiller.config import ADAM_BETAS, ADAM_OUTER_LR, DistillConfig
from compressdata.distiller.outer import outer_adam_step, outer_sgd_step, scheduled_lr

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"bases": torch.randn(4, 3, 5, generator=generator), "addresses": torch.randn(7, 4, generator=generator)}


def _torch_adam_run(theta, grads_per_step, lr, betas, clip, iterations, schedule):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in theta.items()}
    opt = torch.optim.Adam(list(params.values()), lr=lr, betas=betas, foreach=False)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations) if schedule == "cosine" else None
    for grads in grads_per_step:
        for k, p in params.items():
            p.grad = grads[k].clone()
        if math.isfinite(clip):
            torch.nn.utils.clip_grad_norm_(list(params.values()), clip)
        opt.step()
        if sched:
            sched.step()
    return {k: p.detach() for k, p in params.items()}


@pytest.mark.parametrize("clip, schedule", [(math.inf, "constant"), (0.5, "constant"), (math.inf, "cosine"),
                                            (0.5, "cosine")])
def test_adam_step_equals_torch_adam(clip, schedule):
    g = torch.Generator().manual_seed(1)
    theta = _tensors(g)
    steps, lr, betas = 6, 0.1, (0.5, 0.9)
    grads_per_step = [{k: 3 * torch.randn(v.shape, generator=g) for k, v in theta.items()} for _ in range(steps)]
    expected = _torch_adam_run(theta, grads_per_step, lr, betas, clip, steps, schedule)
    before = {k: v.clone() for k, v in theta.items()}
    mine = theta
    first = {k: torch.zeros_like(v) for k, v in theta.items()}
    second = {k: torch.zeros_like(v) for k, v in theta.items()}
    for i, grads in enumerate(grads_per_step):
        step_lr = scheduled_lr(lr, schedule, i, steps)
        mine, first, second, norm = outer_adam_step(mine, grads, first, second, i + 1, step_lr, betas, clip)
        assert float(norm) == pytest.approx(float(torch.sqrt(sum(v.pow(2).sum() for v in grads.values()))))
    for k in theta:
        assert torch.equal(theta[k], before[k])  # inputs unchanged
        if math.isinf(clip) and schedule == "constant":
            assert torch.equal(mine[k], expected[k]), k  # the same operations, bit for bit
        else:  # torch clips and anneals with float32 arithmetic of its own
            torch.testing.assert_close(mine[k], expected[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(mine["bases"], before["bases"])


def test_sgd_step_equals_torch_sgd_and_cosine_endpoints():
    g = torch.Generator().manual_seed(2)
    theta = _tensors(g)
    params = {k: torch.nn.Parameter(v.clone()) for k, v in theta.items()}
    opt = torch.optim.SGD(list(params.values()), lr=0.3, momentum=0.5, foreach=False)
    momentum = {k: torch.zeros_like(v) for k, v in theta.items()}
    for _ in range(4):
        grads = {k: torch.randn(v.shape, generator=g) for k, v in theta.items()}
        for k, p in params.items():
            p.grad = grads[k].clone()
        opt.step()
        theta, momentum, _ = outer_sgd_step(theta, grads, momentum, 0.3, 0.5, math.inf)
    for k in theta:
        torch.testing.assert_close(theta[k], params[k].detach(), rtol=1e-6, atol=1e-7)
    assert scheduled_lr(2.0, "cosine", 0, 10) == 2.0 and scheduled_lr(2.0, "cosine", 5, 10) == pytest.approx(1.0)
    assert scheduled_lr(2.0, "constant", 9, 10) == 2.0
    with pytest.raises(ValueError, match="unknown outer schedule 'linear'"):
        scheduled_lr(1.0, "linear", 0, 10)
    with pytest.raises(ValueError, match="step count starts at 1"):
        outer_adam_step(theta, theta, momentum, momentum, 0, 0.1, (0.5, 0.9), math.inf)


def test_outer_optimizer_defaults_resolve_and_are_recorded():
    dwa = DistillConfig.from_flat(objective="dwa", parameterization="memory")
    assert dwa.resolved_optimizer == ("adam", ADAM_BETAS, "cosine")
    assert dwa.resolved_outer == (ADAM_OUTER_LR, None, math.inf)
    hyper = dwa.recorded_hyperparameters()
    assert (hyper["outer_optimizer"], hyper["outer_betas"], hyper["outer_schedule"]) == ("adam", (0.5, 0.9), "cosine")
    assert hyper["outer_momentum"] is None
    assert DistillConfig.from_flat().resolved_optimizer == ("sgd", None, "constant")
    dwa_sgd = DistillConfig.from_flat(objective="dwa", outer_optimizer="sgd")
    assert dwa_sgd.resolved_optimizer == ("sgd", None, "constant")
    assert DistillConfig.from_flat(objective="dwa", outer_optimizer="sgd").resolved_outer == (10.0, 0.5, math.inf)
    explicit = DistillConfig.from_flat(outer_optimizer="adam", outer_betas=(0.9, 0.999), outer_lr=0.01)
    assert explicit.resolved_optimizer == ("adam", (0.9, 0.999), "constant")
    # JSON round trip (lists for tuples) resumes as the same run; under cosine, iterations matter
    again = DistillConfig.from_dict({**dwa.to_dict(), "outer_betas": [0.5, 0.9]})
    assert dwa.differences(again) == []
    other = DistillConfig.from_flat(objective="dwa", parameterization="memory", iterations=5)
    assert dwa.differences(other) == ["iterations"]
    assert DistillConfig.from_flat().differences(DistillConfig.from_flat(iterations=5)) == []
    assert DistillConfig.from_flat().differences(DistillConfig.from_flat(outer_optimizer="adam")) == [
        "outer_betas", "outer_lr", "outer_momentum", "outer_optimizer"]


@pytest.mark.parametrize("options, message", [
    ({"outer_optimizer": "rmsprop"}, "unknown outer_optimizer 'rmsprop'; expected one of sgd, adam"),
    ({"outer_schedule": "step"}, "unknown outer_schedule 'step'; expected one of constant, cosine"),
    ({"objective": "dwa", "outer_betas": (0.5, 1.0)}, "outer_betas must be two numbers in [0, 1)"),
    ({"outer_optimizer": "adam", "outer_betas": (0.5,)}, "outer_betas must be two numbers in [0, 1)"),
    ({"outer_betas": (0.5, 0.9)}, "outer_betas are Adam's; the outer optimiser is 'sgd'"),
    ({"objective": "dwa", "outer_momentum": 0.9}, "outer_momentum (0.9) is an sgd option"),
])
def test_outer_optimizer_configuration_errors(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        DistillConfig.from_flat(**options).validate()


def test_checkpoint_second_moments_round_trip_and_bad_sets(tmp_path):
    g = torch.Generator().manual_seed(3)
    theta = _tensors(g)
    zeros = {k: torch.zeros_like(v) for k, v in theta.items()}
    second = {k: torch.rand(v.shape, generator=g) for k, v in theta.items()}
    state = DistillState(4, theta, zeros, g.get_state(), second)
    save_checkpoint(tmp_path, state, {"x": 1})
    loaded, config = load_checkpoint(tmp_path)
    assert config == {"x": 1} and loaded.iteration == 4
    for k in theta:
        assert torch.equal(loaded.second_moment[k], second[k])
    save_checkpoint(tmp_path, DistillState(4, theta, zeros, g.get_state(), {"bases": second["bases"]}), {})
    with pytest.raises(ValueError, match=r"second moments \['bases'\] must be none \(sgd\) or one per theta"):
        load_checkpoint(tmp_path)


def test_cli_outer_optimizer_options_reach_the_bank(tmp_path, capsys):
    from compressdata import load_memory_bank
    from compressdata.cli import main

    out = tmp_path / "adam.safetensors"
    assert main(["distill", "--outer.optimizer", "adam", "--outer.betas", "[0.9,0.99]", "--outer.schedule", "cosine",
                 "--outer.lr", "0.01", "--outer.iterations", "2", "--inner.unroll_steps", "2",
                 "--model.width", "8", "--inner.batch_per_class", "2",
                 "--outer.real_batch_per_class", "2", "--out", str(out), "--progress", "false",
                 "--checkpoints", "false"]) == 0
    hyper = load_memory_bank(out).provenance["method"]["hyperparameters"]
    assert (hyper["outer_optimizer"], hyper["outer_betas"], hyper["outer_schedule"], hyper["outer_lr"]) == (
        "adam", [0.9, 0.99], "cosine", 0.01)
    with pytest.raises(SystemExit):
        main(["distill", "--outer.optimizer", "lbfgs", "--out", str(out)])
    assert "lbfgs" in capsys.readouterr().err
