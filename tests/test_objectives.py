"""The parameterization x objective axes: dm, gm and the mim add-on on known answers, the lowrank
parameterization, and short real Fashion-MNIST runs of every new combination."""

from __future__ import annotations

import math

import pytest
import torch

from compressdata.bank.format import check_bank
from compressdata.bank.io import read_bank_file
from compressdata.bank.memory_bank import MemoryBank
from compressdata.cli import main
from compressdata.data.sampler import ClassBalancedSampler
from compressdata.data.sources import load_source
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.loop import distill
from compressdata.distiller.objectives import objective_for
from compressdata.distiller.objectives.dm import dm_objective, mean_embedding_distance
from compressdata.distiller.objectives.gm import gradient_distance
from compressdata.distiller.objectives.mim import nce_loss
from compressdata.distiller.run import DistillRun, fresh_network
from compressdata.distiller.synthetic import SyntheticSet, init_theta, lowrank_factors
from compressdata.evaluate import evaluate_bank
from compressdata.loading import load_memory_bank, save_memory_bank
from compressdata.params import layout_for_budget

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = DistillConfig.from_flat(width=16, iterations=10, inner_batch_per_class=10, real_batch_per_class=32,
                      init="random", seed=0)


@pytest.fixture(scope="module")
def train():
    return load_source("fashion-mnist", "train")


@pytest.fixture(scope="module")
def test_subset():
    return load_source("fashion-mnist", "test").subset(torch.arange(1000))


def _quiet(_):
    pass


# --- dm -------------------------------------------------------------------------------------------

def test_mean_embedding_distance_known_values():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    syn = torch.tensor([[0.0, 0.0]], requires_grad=True)
    d = mean_embedding_distance(lambda x: x, real, syn)
    assert d.item() == pytest.approx(13.0)
    (g,) = torch.autograd.grad(d, syn)
    assert g.tolist() == [[-4.0, -6.0]]  # d/dsyn ||m - syn||^2 = -2 (m - syn)


def _run_on(data, config: DistillConfig, kind: str = "pixels") -> DistillRun:
    layout = layout_for_budget(kind, config.parameterization.budget_ipc, data.num_classes, data.image_shape)
    synthetic = SyntheticSet(kind, data.num_classes, layout.per_class, data.image_shape[1:])
    real = ClassBalancedSampler(data.images, data.labels, data.num_classes)
    return DistillRun(config, torch.device("cpu"), data, real, synthetic, layout)


def test_dm_objective_is_zero_when_synthetic_is_the_real_batch(train):
    # three real images per class; the real batch takes all of them, the synthetic set IS them
    rows = torch.cat([torch.nonzero(train.labels == c).flatten()[:3] for c in range(10)])
    data = train.subset(rows)
    config = DistillConfig.from_flat(objective="dm", parameterization="pixels", budget_ipc=3, width=8,
                           real_batch_per_class=3, inner_batch_per_class=3)
    run = _run_on(data, config)
    theta = {"pixels": data.images.clone()}
    result = dm_objective(run, theta, torch.Generator().manual_seed(0))
    assert result.loss == pytest.approx(0.0, abs=1e-9)
    assert float(result.grads["pixels"].abs().max()) < 1e-6
    # other synthetic pixels: the loss is the per-class distance of mean embeddings by hand
    shifted = {"pixels": data.images + 0.5}
    result = dm_objective(run, shifted, torch.Generator().manual_seed(0))
    seeds = torch.randint(0, 2**62, (13,), generator=torch.Generator().manual_seed(0)).tolist()
    net, _ = fresh_network(config, data.image_shape, 10, seeds[0], torch.device("cpu"))
    with torch.no_grad():
        by_hand = sum(float((net.embed(data.images[3 * c:3 * c + 3]).mean(0)
                             - net.embed(shifted["pixels"][3 * c:3 * c + 3]).mean(0)).pow(2).sum())
                      for c in range(10))
    assert by_hand > 0 and result.loss == pytest.approx(by_hand, rel=1e-4)
    assert float(result.grads["pixels"].abs().max()) > 0


# --- gm -------------------------------------------------------------------------------------------

def test_gradient_distance_known_values():
    g = [torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(10, 6)]
    assert float(gradient_distance(g, g)) == pytest.approx(0.0, abs=1e-5)
    # opposite gradients: 1 - (-1) = 2 per output row of every >= 2-D tensor (4 + 10 rows)
    assert float(gradient_distance(g, [-t for t in g])) == pytest.approx(28.0, abs=1e-4)
    # biases / norm affines do not count; orthogonal rows count 1 each
    a, b = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 3.0], [5.0, 0.0]])
    assert float(gradient_distance([a, torch.ones(3)], [b, -torch.ones(3)])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="gradient shapes differ"):
        gradient_distance([a], [torch.ones(3, 2)])


# --- mim ------------------------------------------------------------------------------------------

def test_nce_loss_known_value_and_separation():
    # one anchor, its positive at cosine 1, one negative at cosine 0, temperature 1
    loss = nce_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]),
                    torch.tensor([0]), torch.tensor([0, 1]), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 32, generator=gen)
    real_labels = torch.arange(10).repeat_interleave(8)
    syn_labels = torch.arange(10).repeat_interleave(2)
    real = centres[real_labels] + 0.05 * torch.randn(80, 32, generator=gen)
    syn = centres[syn_labels] + 0.05 * torch.randn(20, 32, generator=gen)
    separated = nce_loss(syn, real, syn_labels, real_labels, 0.1)
    shuffled = nce_loss(syn, real, syn_labels[torch.randperm(20, generator=gen)], real_labels, 0.1)
    # with 8 equally close positives the loss cannot go below log 8; separated pairs reach it
    assert float(separated) == pytest.approx(math.log(8), abs=0.01)
    assert float(shuffled) > float(separated) + 1


# --- lowrank --------------------------------------------------------------------------------------

def test_lowrank_factors_are_the_best_rank_r_approximation(train):
    images = train.images[:5]
    u, v = lowrank_factors(images, 28)
    assert torch.allclose(u @ v, images, atol=1e-4)
    u, v = lowrank_factors(images, 2)
    assert u.shape == (5, 1, 28, 2) and v.shape == (5, 1, 2, 28)
    s = torch.linalg.svdvals(images.double())
    error = (u.double() @ v.double() - images.double()).flatten(1).norm(dim=1)
    assert torch.allclose(error, s[:, 0, 2:].norm(dim=1), rtol=1e-4)  # Eckart-Young
    with pytest.raises(ValueError, match="rank 29 exceeds the image size"):
        lowrank_factors(images, 29)


def test_lowrank_init_round_trips_through_a_bank(train, tmp_path):
    layout = layout_for_budget("lowrank", 1, 10, (1, 28, 28), rank=2)
    assert layout.per_class == 784 // 112 and layout.floats <= 7840
    synthetic = SyntheticSet("lowrank", 10, layout.per_class, (28, 28))
    real = ClassBalancedSampler(train.images, train.labels, 10)
    for init in ("random", "real"):
        theta = init_theta(synthetic, layout, init, real, torch.Generator().manual_seed(0),
                           (1, 28, 28))
        assert theta["lowrank_u"].shape == (70, 1, 28, 2)
        x, y = synthetic.minibatch(theta, 3, torch.Generator().manual_seed(1))
        assert x.shape == (30, 1, 28, 28) and y.tolist() == [c for c in range(10) for _ in range(3)]
    bank = MemoryBank(**theta, labels=synthetic.hard_labels(), classes=train.classes,
                      image_size=(28, 28), normalization=train.normalization)
    path = tmp_path / "lowrank.safetensors"
    save_memory_bank(bank, path)
    loaded = load_memory_bank(path)
    assert loaded.kind == "lowrank" and loaded.storage["floats_stored"] == layout.floats
    assert torch.equal(loaded.decode(), theta["lowrank_u"] @ theta["lowrank_v"])
    # init "real": the first decoded example is the rank-2 SVD of some real image of class 0
    u, v = lowrank_factors(train.images[train.labels == 0], 2)
    assert ((u @ v) - loaded.decode()[:1]).abs().flatten(1).max(1).values.min() < 1e-4


# --- config axes ----------------------------------------------------------------------------------

def test_axes_resolve_names_and_outer_defaults():
    assert (DistillConfig.from_flat().method_name, DistillConfig.from_flat().kind) == ("rtp", "memory")
    assert DistillConfig.from_flat(method="pixels").method_name == "pixels"
    dm = DistillConfig.from_flat(objective="dm", parameterization="lowrank", mim_weight=0.5)
    assert dm.method_name == "dm-lowrank+mim" and dm.resolved_init == "real"
    assert dm.resolved_outer == (1.0, 0.5, math.inf)
    assert dm.addons == {"mim": {"weight": 0.5, "temperature": 0.1}}
    assert DistillConfig.from_flat().resolved_outer == (0.1, 0.5, 2.0)
    assert DistillConfig.from_flat(outer_lr=3.0, clip_norm=1.0).resolved_outer == (3.0, 0.5, 1.0)
    config = DistillConfig.from_flat(objective="gm")
    assert (config.gm.resolved(config).outer_loop, config.gm.resolved(config).inner_loop) == (1, 1)
    config = DistillConfig.from_flat(objective="gm", budget_ipc=10)
    assert (config.gm.resolved(config).outer_loop, config.gm.resolved(config).inner_loop) == (5, 10)
    # an omitted default and the same value given explicitly resume as the same run
    assert DistillConfig.from_flat().differences(DistillConfig.from_flat(outer_lr=0.1, clip_norm=2.0)) == []


@pytest.mark.parametrize("options, message", [
    ({"objective": "magic"}, "unknown objective 'magic'; expected one of bptt, dm, dwa, gm, mtt"),
    ({"parameterization": "jpeg"}, "unknown parameterization 'jpeg'"),
    ({"method": "pixels", "parameterization": "lowrank"}, "method 'pixels' is pixels + bptt"),
    ({"method": "random-real", "objective": "dm"}, "random-real stores real pixels"),
    ({"method": "random-real", "mim_weight": 1.0}, "random-real does no optimisation"),
    ({"objective": "dm", "learn_labels": True}, "objective 'dm' never uses labels"),
    ({"mim_weight": -1.0}, "mim_weight must be a number >= 0"),
    ({"mim_temperature": 0.0}, "mim_temperature must be a positive number"),
    ({"gm_outer_loop": 0}, "gm_outer_loop must be a positive int"),
    ({"rank": 0}, "rank must be a positive int"),
    ({"network_batching": "vmap", "mim_weight": 1.0}, "would drop the mim add-on"),
])
def test_impossible_combinations_are_refused(options, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace("(", r"\(")):
        DistillConfig.from_flat(**options).validate()


def test_mim_wrapper_adds_its_loss_and_gradients(train):
    config = SHORT.replace(objective="dm", parameterization="pixels", mim_weight=2.0)
    run = _run_on(train, config)
    theta = {"pixels": train.images[:10].clone()}
    host = dm_objective(run, theta, torch.Generator().manual_seed(5))
    both = objective_for(config)(run, theta, torch.Generator().manual_seed(5))
    assert both.metrics["host_loss"] == host.loss and both.metrics["mim_loss"] > 0
    assert both.loss == pytest.approx(host.loss + 2.0 * both.metrics["mim_loss"])
    assert not torch.allclose(both.grads["pixels"], host.grads["pixels"])


# --- short real runs ------------------------------------------------------------------------------

@pytest.mark.parametrize("options, floor", [
    ({"objective": "dm", "parameterization": "pixels"}, 0.2),
    ({"objective": "gm", "parameterization": "pixels", "dsa": True}, 0.25),
    ({"objective": "bptt", "parameterization": "lowrank", "iterations": 5, "unroll_steps": 4,
      "inner_batch_per_class": 8, "real_batch_per_class": 16, "outer_lr": 20.0}, 0.2),
    ({"objective": "dm", "parameterization": "pixels", "mim_weight": 1.0}, 0.2),
])
def test_short_run_from_noise_beats_chance_and_writes_a_valid_bank(train, test_subset, tmp_path,
                                                                   options, floor):
    """From random noise, a few iterations of each objective lift a 15-epoch ConvNet-16 far above
    the 10% chance level, and the bank passes the validator with its axes in provenance."""
    config = SHORT.replace(**options)
    bank = distill(config, train, progress=False, log=_quiet)
    path = tmp_path / "bank.safetensors"
    save_memory_bank(bank, path)
    check_bank(*read_bank_file(path))
    loaded = load_memory_bank(path)
    method = loaded.provenance["method"]
    assert (method["objective"], method["parameterization"]) == (config.objective, config.kind)
    assert method["name"] == config.method_name
    assert ("mim" in method["addons"]) == (config.mim.weight > 0)
    result = evaluate_bank(loaded, test_subset, networks=1, epochs=15, width=16, progress=False)
    assert result.mean > floor, result.summary()


def test_cli_objective_and_param(tmp_path, capsys):
    out = tmp_path / "dm.safetensors"
    assert main(["distill", "--objective", "dm", "--parameterization.kind", "lowrank",
                "--parameterization.budget_ipc", "1",
                 "--outer.iterations", "2", "--model.width", "8", "--outer.real_batch_per_class", "4",
                 "--out", str(out),
                 "--progress", "false", "--checkpoints", "false"]) == 0
    assert "dm-lowrank on fashion-mnist" in capsys.readouterr().out
    bank = load_memory_bank(out)
    hyper = bank.provenance["method"]["hyperparameters"]
    assert bank.kind == "lowrank" and (hyper["outer_lr"], hyper["clip_norm"]) == (1.0, None)
    with pytest.raises(SystemExit):  # the parser knows the registered objectives
        main(["distill", "--objective", "magic", "--out", str(tmp_path / "x.safetensors")])
    assert "magic" in capsys.readouterr().err


@pytest.mark.parametrize("options", [
    {"objective": "gm", "parameterization": "pixels", "gm_outer_loop": 2, "gm_inner_loop": 1,
     "dsa": True},
    {"objective": "dm", "parameterization": "memory", "mim_weight": 0.5},
])
def test_resumed_run_equals_uninterrupted(train, tmp_path, options):
    """Every draw of dm, gm and mim comes from the checkpointed generator: 1 + 1 iterations with a
    resume in between give exactly the 2-iteration bank."""
    config = SHORT.replace(width=8, iterations=2, real_batch_per_class=4, inner_batch_per_class=4,
                     checkpoint_every=1, **options)
    whole = distill(config, train, progress=False, log=_quiet)
    ckpt = config.replace(iterations=1, checkpoint_dir=str(tmp_path / "ckpt"))
    distill(ckpt, train, progress=False, log=_quiet)
    resumed = distill(ckpt.replace(iterations=2, resume=True), train, progress=False, log=_quiet)
    for name, tensor in whole.tensors.items():
        assert torch.equal(tensor, resumed.tensors[name]), name
