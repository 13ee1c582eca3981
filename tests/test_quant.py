"""The one dequantisation of 8-bit tensors (spec 2.6), the quantiser, the straight-through view the
distiller trains through, storage specs, and budgets spent in bytes (spec section 7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressdata import BankFormatError, MemoryBank
from compressdata.params import layout_for_budget
from compressdata.params.quant import (
    MAX_SCALE,
    TensorStorage,
    dequantize,
    parse_storage,
    quantize,
    simulate_storage,
    storage_label,
)

FMNIST = (1, 28, 28)
MEMORY = ("bases", "addresses")


def test_dequantize_is_the_specs_single_binary32_rounding():
    """scale * (q - z) rounded once to float32: the binary64 product (exact for a 24-bit scale times an
    integer of at most 9 bits) rounded to float32, bit for bit."""
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-128, 128, (64, 33), generator=g, dtype=torch.int8)
    scale = (torch.rand(64, generator=g) * 10 ** torch.randint(-8, 8, (64,), generator=g)).float()
    zero_point = torch.randint(-128, 128, (64,), generator=g, dtype=torch.int8)
    got = dequantize(q, scale, zero_point)
    exact = (q.double() - zero_point.double()[:, None]) * scale.double()[:, None]
    assert got.dtype == torch.float32 and torch.equal(got, exact.float())
    per_tensor = dequantize(q, scale[:1], zero_point[:1])  # one scale for every row
    assert torch.equal(per_tensor, ((q.double() - float(zero_point[0])) * float(scale[0])).float())


@pytest.mark.parametrize("per_row", [False, True])
def test_quantize_keeps_zero_exact_and_errors_within_half_a_step(per_row):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 3, 4, 4, generator=g) * torch.linspace(0.1, 5, 20).view(-1, 1, 1, 1)
    x[3] = 0.0  # a row of zeros (per row: scale 1)
    x[5, 0, 0, 0] = 0.0
    q, scale, zero_point = quantize(x, per_row)
    assert (q.dtype, scale.dtype, zero_point.dtype) == (torch.int8, torch.float32, torch.int8)
    assert scale.shape == zero_point.shape == ((20,) if per_row else (1,))
    assert bool((scale > 0).all()) and bool((scale < MAX_SCALE).all())
    back = dequantize(q, scale, zero_point)
    assert bool((back[x == 0] == 0).all()), "0 decodes to exactly 0"
    step = scale.view(-1, 1, 1, 1).expand_as(x) if per_row else scale.expand_as(x)
    assert bool(((back - x).abs() <= step / 2 * (1 + 1e-5)).all())
    if per_row:  # rows of small values get small steps
        assert float(scale[1]) < float(scale[-1]) / 10 and float(scale[3]) == 1.0


def test_quantize_refuses_what_no_scale_holds():
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize(torch.tensor([1.0, float("nan")]), False)
    with pytest.raises(ValueError, match="no 8-bit scale holds them"):
        quantize(torch.tensor([-3e38, 3e38]), False)


@pytest.mark.parametrize("dtype", ["f16", "bf16", "int8", "int8-row"])
def test_simulate_shows_the_stored_values_with_a_straight_through_gradient(dtype):
    storage = TensorStorage(dtype)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(2), requires_grad=True)
    seen = storage.simulate(x)
    stored = storage.store("x", x)
    decoded = MemoryBank(pixels=stored["x"].reshape(6, 1, 1, 5), labels=[0] * 6, classes=["c"],
                         quantization={"pixels": (stored["x.scale"], stored["x.zero_point"])}
                         if storage.quantized else None).decode().reshape(6, 5)
    assert torch.equal(seen.detach(), decoded), "the distiller sees exactly what the bank will store"
    assert not torch.equal(seen.detach(), x.detach())
    weights = torch.randn(6, 5)
    (seen * weights).sum().backward()
    assert torch.equal(x.grad, weights)  # straight-through: the identity's gradient
    assert TensorStorage("f32").simulate(x) is x


def test_parse_storage_forms_and_errors():
    assert {n: s.dtype for n, s in parse_storage("int8", MEMORY).items()} == {"bases": "int8", "addresses": "int8"}
    assert {n: s.dtype for n, s in parse_storage("bases=f16", MEMORY).items()} == {"bases": "f16", "addresses": "f32"}
    mixed = parse_storage("int8-row, addresses=bf16", MEMORY)
    assert storage_label(mixed) == "bases=int8-row,addresses=bf16" and storage_label(parse_storage("f16", MEMORY)) \
        == "f16"
    with pytest.raises(ValueError, match="unknown storage dtype 'int4'"):
        parse_storage("int4", MEMORY)
    with pytest.raises(ValueError, match="'pixels' is not a stored tensor here; expected one of bases, addresses"):
        parse_storage("pixels=int8", MEMORY)
    with pytest.raises(ValueError, match="empty entry"):
        parse_storage("int8,", MEMORY)


def test_simulate_storage_replaces_only_the_named_tensors():
    theta = {"bases": torch.randn(2, 1, 3, 3), "addresses": torch.randn(4, 2)}
    out = simulate_storage(theta, parse_storage("bases=int8", MEMORY))
    assert out["addresses"] is theta["addresses"] and not torch.equal(out["bases"], theta["bases"])
    assert simulate_storage(theta, None) == theta


def test_a_bank_refuses_an_int8_tensor_without_its_scale():
    with pytest.raises(BankFormatError, match=r"stored as I8, so 'pixels.scale' and 'pixels.zero_point' are "
                                              r"required"):
        MemoryBank(pixels=torch.zeros(2, 1, 2, 2, dtype=torch.int8), labels=[0, 1], classes=["a", "b"])
    with pytest.raises(BankFormatError, match=r"tensor 'pixels.scale': value 0.0 outside \(0, 2\^120\)"):
        MemoryBank(pixels=torch.zeros(2, 1, 2, 2, dtype=torch.int8), labels=[0, 1], classes=["a", "b"],
                   quantization={"pixels": (torch.zeros(1), torch.zeros(1, dtype=torch.int8))})


# ---- budgets in bytes (spec 7) ----------------------------------------------------------------------


@pytest.mark.parametrize("kind, ipc", [("pixels", 1), ("pixels", 10), ("memory", 1), ("memory", 10),
                                       ("memory", 0.5), ("lowrank", 1), ("lowrank", 0.5)])
def test_an_ipc_budget_is_the_bytes_of_float32_images(kind, ipc):
    """In float32 the byte rule buys exactly the floats of the floats rule (unchanged layouts)."""
    by_ipc = layout_for_budget(kind, ipc, 10, FMNIST)
    by_bytes = layout_for_budget(kind, 0, 10, FMNIST, budget_bytes=4 * int(ipc * 7840))
    assert by_ipc == by_bytes and by_ipc.bytes == 4 * by_ipc.floats <= 4 * ipc * 7840


def test_int8_buys_four_times_the_values_at_the_same_bytes():
    int8 = parse_storage("int8", MEMORY)
    layout = layout_for_budget("memory", 0, 10, FMNIST, budget_bytes=7840, storage=int8)
    # half the bytes to bases: 3920 one-byte values = 20 bases of 14x14 (ds=2), then 19 rows per class
    assert (layout.n_bases, layout.downsample, layout.per_class, layout.bytes) == (20, 2, 19, 7720)
    f32 = layout_for_budget("memory", 0, 10, FMNIST, budget_bytes=7840)
    assert (f32.n_bases, f32.downsample, f32.per_class) == (20, 4, 4) and f32.floats * 4 == f32.bytes <= 7840
    assert layout.floats > 3 * f32.floats


def test_per_row_parameters_are_counted_and_per_tensor_ones_are_not():
    """The bytes of ten 8-bit images per class buy ten per class with one scale per tensor, and nine
    with a scale (and zero point, 5 bytes) per image."""
    for dtype, per_class in (("int8", 10), ("int8-row", 9)):
        layout = layout_for_budget("pixels", 0, 10, FMNIST, budget_bytes=78_400,
                                   storage=parse_storage(dtype, ("pixels",)))
        assert layout.per_class == per_class
    row = layout_for_budget("memory", 0, 10, FMNIST, budget_bytes=7840, n_bases=20, downsample=2,
                            storage=parse_storage("int8,addresses=int8-row", MEMORY))
    assert row.per_class == (7840 - 20 * 196) // (10 * (20 + 5)) == 15
    assert row.bytes == 20 * 196 + 15 * 10 * (20 + 5) <= 7840


def test_byte_budgets_too_small_say_so():
    with pytest.raises(ValueError, match="budget too small for pixels.*a smaller storage dtype"):
        layout_for_budget("pixels", 0, 10, FMNIST, budget_bytes=7840)  # one float32 image is 3136 bytes
    with pytest.raises(ValueError, match="budget_bytes must be a positive integer"):
        layout_for_budget("pixels", 1, 10, FMNIST, budget_bytes=0)
    assert np.isclose(layout_for_budget("pixels", 0, 10, FMNIST, budget_bytes=7840,
                                        storage=parse_storage("int8", ("pixels",))).bytes, 7840)
