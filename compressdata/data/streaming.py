"""Streaming real sources that need not fit in memory: webdataset shards and `datasets` streaming.

A stream yields `StreamSample(image, label, key)` (image uint8 or float [C, H, W] in [0, 1]) forever,
epoch after epoch, split by rank and DataLoader worker:
- webdataset (`ShardStream`): every epoch the shard list is permuted with a generator seeded by
  (seed, epoch), the same on every rank; reader slot s = rank * workers + worker reads shards
  s, s + R, s + 2R, ... (R = ranks x workers readers; disjoint, and together complete), and shuffles
  its samples through a buffer seeded by (seed, epoch, slot). The order is a function of the seed.
- `datasets` (`HFStream`): `load_dataset(..., streaming=True)` with its own seeded shard + buffer
  shuffle (`shuffle(seed, buffer_size)`, `set_epoch`), `split_dataset_by_node` for the rank, and the
  library's own split of shards over DataLoader workers.
`StreamingSampler` turns a stream into class-balanced real batches for the distiller (per-class ring
buffers refreshed from the stream; the `data.sampler.BalancedSampler` protocol), and
`streaming_source` builds it for one rank of a streaming run.
"""

from __future__ import annotations

import io
import itertools
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from compressdata.bank.metadata import Normalization
from compressdata.data.images import GRAY_MODES, IMAGE_EXTENSIONS, array_to_nchw
from compressdata.data.readers.webdataset import expand_shards
from compressdata.data.real import RealData, channel_stats
from compressdata.errors import MissingFileError, SourceError

PROBE_SAMPLES = 2048
_IMAGE_EXTS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class StreamSample:
    """One streamed example: image uint8 / float32 [C, H, W], int label, a unique key."""

    image: torch.Tensor
    label: int
    key: str


def _seed(*parts: int) -> int:
    """A generator seed mixing several integers (stable across processes, runs and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def _decode(members: dict[str, bytes], key: str) -> StreamSample:
    from PIL import Image

    if "cls" not in members:
        raise SourceError(f"sample {key} has no .cls label; members: {sorted(members)}")
    ext = next((e for e in _IMAGE_EXTS if e in members), None)
    if ext is not None:
        with Image.open(io.BytesIO(members[ext])) as img:
            array = np.array(img.convert("L" if img.mode in GRAY_MODES else "RGB"))
    elif "npy" in members:
        array = np.load(io.BytesIO(members["npy"]), allow_pickle=False)
    else:
        raise SourceError(f"sample {key} has no image member (.{', .'.join(_IMAGE_EXTS)} or .npy); "
                         f"members: {sorted(members)}")
    image = array_to_nchw(array, key, batched=False)
    return StreamSample(image, int(members["cls"].decode("ascii").strip()), key)


def read_shard(path: str) -> Iterator[StreamSample]:
    """The samples of one webdataset tar shard in tar order (members grouped by key)."""
    with tarfile.open(path, "r") as tar:
        key, members = None, {}
        for info in tar:
            if not info.isfile():
                continue
            base = info.name.rsplit("/", 1)[-1]
            stem, _, ext = base.partition(".")
            prefix = info.name[: len(info.name) - len(base)] + stem
            if prefix != key and members:
                yield _decode(members, f"{path}:{key}")
                members = {}
            key = prefix
            members[ext.lower()] = tar.extractfile(info).read()
        if members:
            yield _decode(members, f"{path}:{key}")


def buffer_shuffle(samples: Iterator[StreamSample], size: int,
                   generator: torch.Generator) -> Iterator[StreamSample]:
    """Shuffle through a buffer of `size`: each incoming sample replaces a random buffered one,
    which is emitted; the rest is emitted in random order at the end (size <= 1: unchanged)."""
    if size <= 1:
        yield from samples
        return
    buffer: list[StreamSample] = []
    for s in samples:
        if len(buffer) < size:
            buffer.append(s)
            continue
        i = int(torch.randint(0, size, (1,), generator=generator))
        buffer[i], s = s, buffer[i]
        yield s
    for i in torch.randperm(len(buffer), generator=generator).tolist():
        yield buffer[i]


class ShardStream(IterableDataset):
    """webdataset shards as a seeded, rank- and worker-split stream (see the module docstring).

    epochs=None streams forever; shuffle_buffer=0 keeps tar order within each shard and
    shuffle_shards=False keeps the shard order (the probe of `streaming_source` reads that way).
    """

    def __init__(self, shards: list[str], *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle_buffer: int = 1000, shuffle_shards: bool = True, epochs: int | None = None):
        super().__init__()
        if not shards:
            raise SourceError("a shard stream needs at least one shard")
        if not 0 <= rank < world_size:
            raise SourceError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.shards, self.seed, self.rank, self.world_size = list(shards), seed, rank, world_size
        self.shuffle_buffer, self.shuffle_shards, self.epochs = shuffle_buffer, shuffle_shards, epochs

    def slot(self) -> tuple[int, int]:
        """(this reader's slot, number of readers) from the rank and the DataLoader worker."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        readers = self.world_size * workers
        if readers > len(self.shards):
            raise SourceError(f"{readers} readers ({self.world_size} ranks x {workers} workers) "
                             f"need at least {readers} shards, got {len(self.shards)}; write more "
                             f"shards or use fewer workers")
        return self.rank * workers + worker, readers

    def epoch_shards(self, epoch: int, slot: int, readers: int) -> list[str]:
        """The shards reader `slot` of `readers` reads in `epoch`."""
        order = list(range(len(self.shards)))
        if self.shuffle_shards:
            order = torch.randperm(len(order), generator=torch.Generator().manual_seed(
                _seed(self.seed, epoch))).tolist()
        return [self.shards[i] for i in order[slot::readers]]

    def __iter__(self) -> Iterator[StreamSample]:
        slot, readers = self.slot()
        epochs = itertools.count() if self.epochs is None else range(self.epochs)
        for epoch in epochs:
            samples = (s for shard in self.epoch_shards(epoch, slot, readers) for s in read_shard(shard))
            generator = torch.Generator().manual_seed(_seed(self.seed, epoch, slot))
            yield from buffer_shuffle(samples, self.shuffle_buffer, generator)


class HFStream(IterableDataset):
    """A `datasets` streaming split (local files or, with a Hub cache, a dataset id) as a seeded,
    rank-split stream of `StreamSample`s (datasets splits its shards over DataLoader workers)."""

    def __init__(self, path: str, split: str = "train", *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle_buffer: int = 1000, epochs: int | None = None,
                 image_column: str = "image", label_column: str = "label"):
        super().__init__()
        import datasets
        from datasets.distributed import split_dataset_by_node

        ds = datasets.load_dataset(path, split=split, streaming=True)
        if shuffle_buffer > 1:
            ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
        self.ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
        self.name, self.epochs = f"hf:{path}", epochs
        self.image_column, self.label_column = image_column, label_column
        feature = (ds.features or {}).get(label_column)
        self.classes: list[str] | None = getattr(feature, "names", None)

    def __iter__(self) -> Iterator[StreamSample]:
        epochs = itertools.count() if self.epochs is None else range(self.epochs)
        for epoch in epochs:
            self.ds.set_epoch(epoch)
            for i, row in enumerate(self.ds):
                if self.image_column not in row or self.label_column not in row:
                    raise SourceError(f"{self.name}: rows need columns {self.image_column!r} and "
                                     f"{self.label_column!r}; got {sorted(row)}")
                image = array_to_nchw(np.asarray(row[self.image_column]), self.name, batched=False)
                yield StreamSample(image, int(row[self.label_column]), f"{self.name}:{epoch}:{i}")


def iterate(stream: IterableDataset, workers: int = 0) -> Iterator[StreamSample]:
    """The stream's samples, read by `workers` DataLoader worker processes (0: in this process);
    the DataLoader takes the workers' samples in turn, so the order stays deterministic."""
    if workers == 0:
        return iter(stream)
    loader = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_identity,
                        persistent_workers=False)
    return iter(loader)


def _identity(sample: StreamSample) -> StreamSample:
    return sample


class StreamingSampler:
    """Class-balanced real batches from a stream: per-class ring buffers of `capacity` normalised
    images, refreshed from the stream before every batch (`refresh` new samples). It offers the
    `BalancedSampler` protocol (images, labels, by_class, class_index, batch) over what is buffered.
    """

    def __init__(self, samples: Iterator[StreamSample], n_classes: int, capacity: int,
                 normalization: Normalization, device: torch.device | str = "cpu",
                 refresh: int | None = None, max_warmup: int | None = None):
        if capacity < 1:
            raise SourceError(f"the per-class buffer capacity must be >= 1, got {capacity}")
        self.samples, self.n_classes, self.capacity = samples, n_classes, capacity
        self.normalization, self.device = normalization, torch.device(device)
        self.refresh = refresh if refresh is not None else n_classes
        self.images: torch.Tensor | None = None
        self.labels = torch.arange(n_classes, device=self.device).repeat_interleave(capacity)
        self.counts = [0] * n_classes
        self.next_slot = [0] * n_classes
        self.seen = 0
        self._warm_up(max_warmup if max_warmup is not None else 100 * capacity * n_classes)

    def _add(self, sample: StreamSample) -> None:
        c = sample.label
        if not 0 <= c < self.n_classes:
            raise SourceError(f"streamed sample {sample.key} has label {c}; expected [0, "
                             f"{self.n_classes})")
        pixels = sample.image.to(torch.float32) / (255.0 if sample.image.dtype == torch.uint8 else 1.0)
        x = self.normalization.apply(pixels.unsqueeze(0))[0].to(self.device)
        if self.images is None:
            self.images = torch.zeros(self.n_classes * self.capacity, *x.shape, device=self.device)
        row = c * self.capacity + self.next_slot[c]
        self.images[row] = x
        self.next_slot[c] = (self.next_slot[c] + 1) % self.capacity
        self.counts[c] = min(self.counts[c] + 1, self.capacity)
        self.seen += 1

    def _pull(self, n: int) -> None:
        for sample in itertools.islice(self.samples, n):
            self._add(sample)

    def _warm_up(self, limit: int) -> None:
        while min(self.counts) < self.capacity:
            if self.seen >= limit:
                short = {c: n for c, n in enumerate(self.counts) if n < self.capacity}
                raise SourceError(f"the stream gave {self.seen} samples but the per-class buffers "
                                 f"of classes {sorted(short)} are still short of {self.capacity} "
                                 f"(have {short}); lower the buffer (stream_buffer_per_class) or "
                                 f"check that every class is in this rank's shards")
            before = self.seen
            self._pull(self.n_classes)
            if self.seen == before:
                raise SourceError(f"the stream ended after {self.seen} samples before every class "
                                 f"had {self.capacity} buffered")

    @property
    def by_class(self) -> list[torch.Tensor]:
        """Buffer rows holding each class's current images."""
        return [torch.arange(c * self.capacity, c * self.capacity + n)
                for c, n in enumerate(self.counts)]

    def class_index(self, per_class: int, generator: torch.Generator) -> torch.Tensor:
        """Rows of `per_class` distinct buffered examples of every class."""
        picks = [idx[torch.randperm(idx.numel(), generator=generator)[:per_class]]
                 for idx in self.by_class]
        return torch.cat(picks)

    def batch(self, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Refresh the buffers from the stream, then a class-balanced batch (images, labels)."""
        self._pull(self.refresh)
        index = self.class_index(per_class, generator).to(self.device)
        return self.images[index], self.labels[index]


def open_stream(source: str, split: str, *, seed: int, rank: int, world_size: int,
                shuffle: bool = True, epochs: int | None = None) -> ShardStream | HFStream:
    """The stream of a `wds:PATTERN` or `hf:PATH` source for this rank."""
    if source.startswith("wds:"):
        shards = expand_shards(source[4:])
        missing = [s for s in shards if not s.endswith(".tar") or not os.path.isfile(s)]
        if not shards or missing:
            raise MissingFileError(f"{source}: no readable .tar shards match (missing or not .tar: "
                                    f"{missing[:3]})")
        return ShardStream(shards, seed=seed, rank=rank, world_size=world_size,
                           shuffle_buffer=1000 if shuffle else 0, shuffle_shards=shuffle,
                           epochs=epochs)
    if source.startswith("hf:"):
        return HFStream(source[3:], split, seed=seed, rank=rank, world_size=world_size,
                        shuffle_buffer=1000 if shuffle else 0, epochs=epochs)
    raise SourceError(f"streaming reads 'wds:' or 'hf:' sources, got {source!r}")


def probe(source: str, split: str, n: int = PROBE_SAMPLES) -> RealData:
    """The first `n` samples in unshuffled order (the same on every rank): the source's image
    shape, class count (the highest label seen + 1, or the ClassLabel names) and the per-channel
    normalisation every rank uses."""
    stream = open_stream(source, split, seed=0, rank=0, world_size=1, shuffle=False, epochs=1)
    samples = list(itertools.islice(iter(stream), n))
    if not samples:
        raise SourceError(f"{source}: the stream is empty")
    pixels = torch.stack([s.image for s in samples])
    labels = torch.tensor([s.label for s in samples], dtype=torch.int64)
    classes = getattr(stream, "classes", None) or [str(c) for c in range(int(labels.max()) + 1)]
    mean, std = channel_stats(pixels)
    return RealData(pixels, labels, classes, source, split, Normalization(mean=mean, std=std))


def streaming_source(source: str, split: str, device: torch.device, *, seed: int, buffer_per_class: int,
                     refresh_per_class: int, workers: int = 0, rank: int = 0,
                     world_size: int = 1) -> tuple[RealData, StreamingSampler]:
    """For one rank of a streaming run: (a RealData describing the source: the probe's classes, shape and
    normalisation, holding this rank's warmed-up buffers; the sampler of this rank's stream, which reads
    `refresh_per_class` new samples per class before every batch)."""
    head = probe(source, split)
    stream = open_stream(source, split, seed=seed, rank=rank, world_size=world_size)
    sampler = StreamingSampler(
        iterate(stream, workers), head.num_classes, buffer_per_class, head.normalization, device,
        refresh=head.num_classes * refresh_per_class)
    buffered = head.normalization.invert(sampler.images.cpu()).clamp(0, 1)
    described = RealData(buffered, sampler.labels.cpu(), head.classes, source, split, head.normalization)
    return described, sampler
