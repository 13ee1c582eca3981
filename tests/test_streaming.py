"""Streaming sources on locally written webdataset shards (and a local parquet `datasets` split) of
a real Fashion-MNIST subset: seeded deterministic order, disjoint and complete coverage across
ranks x DataLoader workers, class-balanced real batches, and a streaming distillation run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressdata.data.streaming import (
    HFStream,
    ShardStream,
    StreamingSampler,
    iterate,
    probe,
    read_shard,
)
from compressdata.distiller.config import DistillConfig
from compressdata.distiller.loop import distill

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the local Fashion-MNIST files"),
              pytest.mark.usefixtures("one_torch_thread")]
N, SHARDS = 480, 8


@pytest.fixture(scope="module")
def subset(fashion_mnist_train):
    return fashion_mnist_train.subset(torch.arange(N))


@pytest.fixture(scope="module")
def shards(subset, tmp_path_factory):
    import webdataset as wds

    from compressdata.serving.export import png_bytes, to_pil_images

    folder = tmp_path_factory.mktemp("shards")
    images = to_pil_images(subset.float_pixels)
    with wds.ShardWriter(str(folder / "fmnist-%03d.tar"), maxcount=N // SHARDS, verbose=0) as sink:
        for i, (img, label) in enumerate(zip(images, subset.labels.tolist(), strict=True)):
            sink.write({"__key__": f"s{i:05d}", "png": png_bytes(img), "cls": str(label).encode()})
    paths = sorted(str(p) for p in folder.glob("*.tar"))
    assert len(paths) == SHARDS
    return paths


def _keys(stream, workers: int = 0) -> list[str]:
    return [s.key.rsplit(":", 1)[1] for s in iterate(stream, workers)]


def test_shards_hold_the_real_images(shards, subset):
    first = list(read_shard(shards[0]))
    assert len(first) == N // SHARDS
    for s in first[:5]:
        i = int(s.key.rsplit(":s", 1)[1])
        assert torch.equal(s.image, subset.pixels[i]) and s.label == int(subset.labels[i])


def test_order_is_a_function_of_the_seed(shards):
    one = _keys(ShardStream(shards, seed=1, shuffle_buffer=64, epochs=2))
    assert one == _keys(ShardStream(shards, seed=1, shuffle_buffer=64, epochs=2))
    assert one != _keys(ShardStream(shards, seed=2, shuffle_buffer=64, epochs=2))
    first, second = one[:N], one[N:]
    assert sorted(first) == sorted(second) == sorted(f"s{i:05d}" for i in range(N))
    assert first != second  # every epoch reshuffles
    assert first != sorted(first)


@pytest.mark.parametrize("world,workers", [(2, 2), (4, 1)])
def test_ranks_and_workers_cover_the_shards_disjointly_and_completely(shards, world, workers):
    per_rank = [_keys(ShardStream(shards, seed=3, rank=r, world_size=world, epochs=1), workers)
                for r in range(world)]
    everything = [k for keys in per_rank for k in keys]
    assert len(everything) == len(set(everything)) == N
    assert per_rank[0] == _keys(ShardStream(shards, seed=3, rank=0, world_size=world, epochs=1),
                                workers)


def test_too_many_readers_is_a_clear_error(shards):
    with pytest.raises(ValueError, match="need at least 16 shards"):
        _keys(ShardStream(shards[:8], world_size=16, epochs=1))


def test_sampler_gives_class_balanced_batches_of_real_images(shards, subset):
    head = probe(f"wds:{shards[0].rsplit('-', 1)[0]}-*.tar", "train")
    assert head.num_classes == 10 and head.image_shape == (1, 28, 28)
    stream = ShardStream(shards, seed=0, shuffle_buffer=32)
    sampler = StreamingSampler(iter(stream), 10, capacity=8, normalization=head.normalization,
                               refresh=20)
    real = {subset.pixels[i].numpy().tobytes() for i in range(N)}
    seen_before = sampler.seen
    for step in range(5):
        x, y = sampler.batch(4, torch.Generator().manual_seed(step))
        assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 4))
        assert sampler.seen == seen_before + 20 * (step + 1)  # the buffers refresh from the stream
        # every row is a real image of its class, in the probe's normalised space
        pixels = (head.normalization.invert(x) * 255).round().clamp(0, 255).to(torch.uint8)
        assert all(row.numpy().tobytes() in real for row in pixels)
        labels_of = {subset.pixels[i].numpy().tobytes(): int(subset.labels[i]) for i in range(N)}
        assert [labels_of[row.numpy().tobytes()] for row in pixels] == y.tolist()


def test_streaming_distillation_run(shards):
    pattern = f"wds:{shards[0].rsplit('-', 1)[0]}-{{000..007}}.tar"
    config = DistillConfig.from_flat(source=pattern, streaming=True, stream_buffer_per_class=8,
                           iterations=2, unroll_steps=2, width=8, inner_batch_per_class=2,
                           real_batch_per_class=4, device="cpu", seed=1)
    bank = distill(config, progress=False, log=lambda _: None)
    again = distill(config, progress=False, log=lambda _: None)
    assert bank.num_classes == 10 and tuple(bank.image_shape) == (1, 28, 28)
    for k in bank.tensors:
        assert torch.equal(bank.tensors[k], again.tensors[k])  # deterministic per seed
    with pytest.raises(ValueError, match="streaming reads"):
        config.replace(source="fashion-mnist").validate()


def test_hf_streaming_split_by_rank(subset, tmp_path):
    import datasets

    features = datasets.Features({"image": datasets.Array3D((1, 28, 28), "uint8"),
                                  "label": datasets.ClassLabel(names=subset.classes)})
    ds = datasets.Dataset.from_dict({"image": subset.pixels[:200].numpy(),
                                     "label": subset.labels[:200].tolist()}, features=features)
    for i in range(4):
        ds.shard(4, i, contiguous=True).to_parquet(str(tmp_path / f"train-{i:05d}.parquet"))
    keys = []
    for rank in range(2):
        stream = HFStream(str(tmp_path), seed=0, rank=rank, world_size=2, shuffle_buffer=16,
                          epochs=1)
        assert stream.classes == subset.classes
        samples = list(stream)
        keys += [int(s.image.sum()) * 100 + s.label for s in samples]
    expected = [int(subset.pixels[i].sum()) * 100 + int(subset.labels[i]) for i in range(200)]
    assert sorted(keys) == sorted(expected)
