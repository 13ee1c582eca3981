"""The dataset card (README.md) of a bank repo and the manifest its YAML front matter carries.

Repo layout, one folder per config:

    README.md                         this card
    <config>/bank.safetensors         the bank
    <config>/preview.png              a grid, one labelled row per class
    <config>/data/<split>-*.parquet   the decoded examples for the Hub's viewer and `datasets.load_dataset`:
                                      `image`, `label` (a ClassLabel with the class names) and, for soft labels,
                                      `soft_label`; split `train` holds every example, or `preview` a
                                      class-balanced subset when the bank has more than VIEWER_LIMIT

The front matter holds the Hub's fields (license with license_name / license_link when it is `other`,
tags, task_categories, source_datasets as Hub ids where known, size_categories, `configs` pointing the
viewer at the parquet files) and a `compressdata` section: per config, the bank file's path, byte
size, sha256 and content checksum. Loading reads that section from the same commit as the bank and
verifies the download against it. A later push keeps the fields of the card it replaces that it does
not manage (and its licence, unless given again).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from compressdata.bank.memory_bank import MemoryBank
from compressdata.bank.metadata import FULL_DATA, RANDOM_REAL, EvaluationResult
from compressdata.errors import UsageError
from compressdata.safe_text import code_fence, markdown_text

CARD_NAME = "README.md"
MANIFEST_KEY = "compressdata"
MANIFEST_FORMAT = "compressdata.hub-repo"
MANIFEST_VERSION = 1
DEFAULT_CONFIG = "default"
CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                   (100_000_000, "10M<n<100M"))


def check_config_name(config: str) -> str:
    """Return `config` if it is a valid config name (letters, digits, `_.-`), else raise."""
    if not isinstance(config, str) or not CONFIG_NAME.fullmatch(config) or ".." in config:
        raise UsageError(
            f"config name must be 1-64 characters of letters, digits, '_', '.', '-' starting with "
            f"a letter or digit (e.g. 'ipc10'), got {config!r}"
        )
    return config


def bank_file(config: str) -> str:
    """Path of a config's bank inside the repo."""
    return f"{config}/bank.safetensors"


def preview_file(config: str) -> str:
    """Path of a config's preview grid inside the repo."""
    return f"{config}/preview.png"


def viewer_folder(config: str) -> str:
    """Folder of a config's viewer data (parquet files) inside the repo."""
    return f"{config}/data"


def viewer_split(entry: BankEntry) -> str:
    """The split name of a config's viewer data: `train` when it holds every example, else `preview`."""
    return "train" if entry.preview_examples >= entry.examples else "preview"


def viewer_file(config: str, split: str) -> str:
    """The parquet file of a config's viewer data."""
    return f"{viewer_folder(config)}/{split}-00000-of-00001.parquet"


def owned_paths(config: str) -> tuple[str, ...]:
    """Path prefixes of a config's generated files (today's and earlier layouts'), replaced on each push."""
    return (f"{viewer_folder(config)}/", f"{config}/preview/")


def natural_key(name: str) -> list[Any]:
    """Sort key putting ipc1 < ipc10 < ipc50."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class BankEntry:
    """One config as the card's manifest records it."""

    config: str
    path: str
    size: int
    sha256: str
    checksum: str
    kind: str
    examples: int
    classes: int
    ipc_equivalent: float
    preview_examples: int

    @classmethod
    def from_dict(cls, d: Any) -> BankEntry:
        """Parse one manifest item; raises ValueError naming the bad field."""
        if not isinstance(d, dict):
            raise UsageError(f"manifest item must be a mapping, got {type(d).__name__}")
        types = {"config": str, "path": str, "size": int, "sha256": str, "checksum": str,
                 "kind": str, "examples": int, "classes": int, "ipc_equivalent": (int, float),
                 "preview_examples": int}
        for key, expected in types.items():
            if not isinstance(d.get(key), expected) or isinstance(d.get(key), bool):
                raise UsageError(f"manifest field {key!r}: expected {expected}, got {d.get(key)!r}")
        for key in ("sha256", "checksum"):
            if not re.fullmatch(r"[0-9a-f]{64}", d[key]):
                raise UsageError(f"manifest field {key!r}: expected 64 hex digits, got {d[key]!r}")
        check_config_name(d["config"])
        if d["path"] != bank_file(d["config"]):
            raise UsageError(f"manifest field 'path': expected {bank_file(d['config'])!r} for config "
                             f"{d['config']!r}, got {d['path']!r:.200}")
        if d["size"] < 8:
            raise UsageError(f"manifest field 'size': expected the bank's byte size, got {d['size']}")
        return cls(**{key: d[key] for key in types})


def entry_for(bank: MemoryBank, config: str, file_bytes: bytes, preview_examples: int
              ) -> BankEntry:
    """The manifest entry of `bank` saved as `file_bytes` under `config`, with
    `preview_examples` decoded examples in its preview shards."""
    return BankEntry(
        config=config,
        path=bank_file(config),
        size=len(file_bytes),
        sha256=hashlib.sha256(file_bytes).hexdigest(),
        checksum=bank.checksum(),
        kind=bank.kind,
        examples=len(bank),
        classes=bank.num_classes,
        ipc_equivalent=float(bank.storage["ipc_equivalent"]),
        preview_examples=preview_examples,
    )


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(YAML front matter as a dict, body) of a card; ({}, text) when it has none."""
    match = re.match(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", text, re.DOTALL)
    if match is None:
        return {}, text
    try:
        data = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"YAML front matter does not parse: {err}") from None
    if not isinstance(data, dict):
        raise UsageError(f"YAML front matter must be a mapping, got {type(data).__name__}")
    return data, text[match.end():]


def read_manifest(text: str) -> list[BankEntry]:
    """The bank entries a card records (ValueError when it is not a compressdata card)."""
    meta, _ = split_front_matter(text)
    section = meta.get(MANIFEST_KEY)
    if not isinstance(section, dict) or section.get("format") != MANIFEST_FORMAT:
        raise UsageError(
            f"the card's YAML has no '{MANIFEST_KEY}' section of format '{MANIFEST_FORMAT}' "
            "(this repo was not published by compressdata push_to_hub)"
        )
    if not isinstance(section.get("version"), int) or section["version"] > MANIFEST_VERSION:
        raise UsageError(
            f"manifest version {section.get('version')!r} is newer than this reader supports "
            f"({MANIFEST_VERSION}): upgrade compressdata"
        )
    banks = section.get("banks")
    if not isinstance(banks, list):
        raise UsageError(f"manifest field 'banks': expected a list, got {banks!r}")
    entries = [BankEntry.from_dict(item) for item in banks]
    names = [e.config for e in entries]
    if len(set(names)) != len(names):
        raise UsageError(f"manifest lists a config twice: {names}")
    return entries


def size_category(examples: int) -> str:
    """The Hub's size category for a number of examples."""
    for bound, label in SIZE_CATEGORIES:
        if examples < bound:
            return label
    return "n>100M"


# The Hub datasets of the source presets (`compressdata.data.sources`), for `source_datasets`.
SOURCE_HUB_IDS = {
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "mnist": "ylecun/mnist",
    "cifar10": "uoft-cs/cifar10",
    "cifar100": "uoft-cs/cifar100",
    "svhn": "ufldl-stanford/svhn",
}
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
TAGS = ["dataset-distillation", "compressdata", "memory-bank", "synthetic"]
# The licence fields of a card: `license` is a Hub licence id; `other` comes with a name and a link.
LICENSE_FIELDS = ("license", "license_name", "license_link")
DERIVED_LICENSE_NAME = "same-as-source-dataset"


def _source(bank: MemoryBank) -> str | None:
    source = bank.provenance.get("source")
    if isinstance(source, dict) and isinstance(source.get("dataset"), str):
        return source["dataset"]
    return source if isinstance(source, str) else None


def source_hub_id(name: str) -> str | None:
    """The Hub dataset a source name stands for: a preset's ("fashion-mnist" -> "zalando-datasets/fashion_mnist")
    or an `hf:` source's own id; None when not known."""
    if name.lower() in SOURCE_HUB_IDS:
        return SOURCE_HUB_IDS[name.lower()]
    repo = name.removeprefix("hf:")
    return repo if name.startswith("hf:") and HUB_ID.fullmatch(repo) else None


def license_fields(banks: Sequence[tuple[BankEntry, MemoryBank]], license: str | None = None,
                   license_name: str | None = None, license_link: str | None = None,
                   existing: dict[str, Any] | None = None) -> dict[str, str]:
    """The card's licence fields: those given, else the existing card's, else `other` with the source
    dataset's terms (license_name same-as-source-dataset, license_link the source's Hub page when known,
    else this card). A given `other` needs a name and a link (the Hub's card spec)."""
    if license is None and (license_name is not None or license_link is not None):
        license = "other"
    if license is not None:
        if license == "other" and not (license_name and license_link):
            raise UsageError("license 'other' needs license_name and license_link (the Hub's dataset card spec: "
                             "an id for the licence, and LICENSE, LICENSE.md or a URL)",
                             cli_hint="pass --license-name and --license-link with --license other")
        if license != "other":
            return {"license": license}
        return {"license": license, "license_name": license_name, "license_link": license_link}
    kept = {k: existing[k] for k in LICENSE_FIELDS if isinstance((existing or {}).get(k), str)}
    if "license" in kept and (kept["license"] != "other" or {"license_name", "license_link"} <= set(kept)):
        return kept
    known = [h for _, b in banks if (s := _source(b)) and (h := source_hub_id(s))]
    link = f"https://huggingface.co/datasets/{known[0]}" if known else CARD_NAME
    return {"license": "other", "license_name": DERIVED_LICENSE_NAME, "license_link": link}


def front_matter(
    banks: Sequence[tuple[BankEntry, MemoryBank]], licence: dict[str, str], pretty_name: str,
    existing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card's YAML fields for these banks (ordered by config name): the existing card's fields that
    the card does not manage stay as they were (its tags are kept beside the card's own)."""
    existing = dict(existing or {})
    sources = sorted({source_hub_id(s) or s for _, b in banks if (s := _source(b))})
    ours = {e.config for e, _ in banks}
    foreign_configs = [c for c in existing.get("configs") or []
                       if isinstance(c, dict) and c.get("config_name") not in ours]
    kept_tags = [t for t in existing.get("tags") or [] if isinstance(t, str) and t not in TAGS]
    managed = {
        **licence,
        "pretty_name": existing.get("pretty_name") if isinstance(existing.get("pretty_name"), str) else pretty_name,
        "tags": [*TAGS, *kept_tags],
        "task_categories": existing.get("task_categories") or ["image-classification"],
        "source_datasets": sources or ["original"],
        "size_categories": sorted({size_category(e.examples) for e, _ in banks}),
        "configs": [
            {"config_name": e.config,
             "data_files": [{"split": viewer_split(e), "path": f"{viewer_folder(e.config)}/{viewer_split(e)}-*"}]}
            for e, _ in banks
        ] + foreign_configs,
        MANIFEST_KEY: {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "banks": [asdict(e) for e, _ in banks],
        },
    }
    unmanaged = {k: v for k, v in existing.items() if k not in managed and k not in LICENSE_FIELDS}
    return {**managed, **unmanaged}


def render_card(
    repo_id: str,
    banks: Sequence[tuple[BankEntry, MemoryBank]],
    license: str | None = None,
    *,
    license_name: str | None = None,
    license_link: str | None = None,
    existing: dict[str, Any] | None = None,
) -> str:
    """The full README.md: YAML front matter then the body (one section per config). `existing`: the front
    matter of the card it replaces (its unmanaged fields and licence are kept; see `license_fields`)."""
    banks = sorted(banks, key=lambda eb: natural_key(eb[0].config))
    sources = sorted({s for _, b in banks if (s := _source(b))})
    pretty = f"{', '.join(sources) or repo_id.split('/')[-1]} memory bank"
    licence = license_fields(banks, license, license_name, license_link, existing)
    meta = front_matter(banks, licence, pretty, existing)
    shown_sources = ", ".join(markdown_text(s) for s in sources)
    yaml_text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=False, width=1000)
    several = len(banks) > 1
    config_arg = f', config="{banks[0][0].config}"' if several else ""
    lines = [
        f"# {markdown_text(str(meta['pretty_name']))}",
        "",
        f"A **memory bank** distilled from {shown_sources or 'a labelled image dataset'} "
        "with [compressdata](https://pypi.org/project/compressdata/): a small set of stored "
        "tensors (for the `memory` kind, K bases shared by all classes plus one address row per "
        "example; example i = upsample(reshape(addresses[i] @ bases))) that decodes into a "
        "labelled training set. The evaluation table reports the test accuracy of fresh "
        "networks trained on it with the recipe below, beside a random real subset of the same "
        "storage and training on the whole real dataset. The bank file is safetensors (no "
        "pickles) and carries its normalisation, training recipe and provenance.",
        "",
        "## Load it",
        "",
        "```bash",
        "pip install compressdata",
        "```",
        "",
        "```python",
        "from compressdata import MemoryDataset",
        f'train_set = MemoryDataset("{repo_id}"{config_arg})',
        "```",
        "",
        "`MemoryDataset` is a drop-in for a torchvision dataset: `train_set[i] -> (image, label)`, the "
        "classes in turn; `print(train_set)` says what it yields. Pass `output=\"pil\", transform=...` "
        "to reuse an existing torchvision pipeline (normalise with the bank's mean and std, listed below). "
        "The dataset viewer and `datasets.load_dataset` read the decoded examples as `image` and a named "
        "`label`.",
        "",
        "## Configs",
        "",
        "| config | kind | examples | classes | images per class (storage equivalent) "
        "| file | best accuracy | random real, same storage | full data |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry, bank in banks:
        best = max(bank.evaluations, key=lambda e: e.mean, default=None)
        score = _best_score(best) if best else "not evaluated"
        random_real = _random_real_cell(best) if best else "-"
        full = _full_data_cell(best) if best else "-"
        lines.append(
            f"| `{entry.config}` | {entry.kind} | {entry.examples} | {entry.classes} "
            f"| {entry.ipc_equivalent:g} | `{entry.path}` ({entry.size:,} bytes) | {score} | {random_real} "
            f"| {full} |"
        )
    if several:
        lines += ["", "Several configs: name one with `config=` (e.g. "
                  f"`load_memory_bank(\"{repo_id}\", config=\"{banks[0][0].config}\")`)."]
    for entry, bank in banks:
        lines += ["", *_config_section(entry, bank)]
    lines += ["", "## Licence", "", _licence_text(licence, sources)]
    return f"---\n{yaml_text}---\n\n" + "\n".join(lines) + "\n"


def _licence_text(licence: dict[str, str], sources: list[str]) -> str:
    if licence.get("license_name") == DERIVED_LICENSE_NAME:
        derived = ", ".join(markdown_text(s) for s in sources) or "the source dataset"
        return (f"The examples are derived from {derived}; its licence terms apply. The publisher can state "
                "another licence with `compressdata push --license ID` (or `--license other --license-name NAME "
                "--license-link URL`).")
    return f"Licence: `{markdown_text(licence['license'])}`" + (
        f" ({markdown_text(licence['license_name'])}, {markdown_text(licence['license_link'])})"
        if licence["license"] == "other" else "") + "."


def _config_section(entry: BankEntry, bank: MemoryBank) -> list[str]:
    storage = bank.storage
    c, h, w = bank.image_shape
    counts = bank.hard_labels().bincount(minlength=bank.num_classes).tolist()
    norm = bank.normalization
    lines = [
        f"## Config `{entry.config}`",
        "",
        f"![preview of {entry.config}: one row per class]({preview_file(entry.config)})",
        "",
        f"- **Kind**: `{bank.kind}`, {len(bank)} examples of shape [{c}, {h}, {w}], "
        f"{bank.label_space} labels"
        + (f", `{bank.upsample}` upsampling" if bank.kind == "memory" else ""),
        "- **Classes** (examples each): "
        + ", ".join(f"{markdown_text(name)} ({n})" for name, n in zip(bank.classes, counts, strict=True)),
        f"- **Storage**: {storage['floats_stored']:,} floats (+ {storage['label_values']:,} label "
        f"values) = the budget of **{storage['ipc_equivalent']:g} real images per class**; "
        f"file `{entry.path}`, {entry.size:,} bytes",
        f"- **Bytes**: {storage['bytes_stored']:,} stored ("
        + ", ".join(f"{name} {dtype}" for name, dtype in bank.storage_dtypes().items())
        + f") = {storage['ipc_equivalent_uint8']:g} 8-bit images per class",
        f"- **Normalization**: mean {norm.mean}, std {norm.std}"
        + (f", ZCA whitening (regularization {norm.zca_regularization})" if norm.uses_zca else ""),
        f"- **Checksums**: file sha256 `{entry.sha256}`, content (sha256-tensors-v1) "
        f"`{entry.checksum}`",
    ]
    if entry.preview_examples >= entry.examples:
        lines.append(f"- **Viewer data**: `{viewer_file(entry.config, 'train')}`, all {entry.examples} decoded "
                     "examples (`image`, `label`" + (", `soft_label`" if bank.label_space != "index" else "")
                     + "); `datasets.load_dataset(repo, config)` reads them as split `train`")
    elif entry.preview_examples:
        lines.append(f"- **Viewer data (a preview)**: `{viewer_file(entry.config, 'preview')}` holds "
                     f"{entry.preview_examples} of the {entry.examples} decoded examples (the classes in turn), as "
                     "split `preview`; the whole bank loads with compressdata")
    lines += ["", "### Training recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {markdown_text(str(k))} | {markdown_text(str(v))} |" for k, v in bank.recipe.to_dict().items()]
    lines += ["", "### Evaluation", ""]
    if bank.evaluations:
        lines += ["| protocol | architecture | networks | epochs | test set | accuracy (mean ± std) "
                  "| random real, same storage (improvement) | full data (gap) |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [
            f"| {_protocol_cell(e)} | {markdown_text(e.architecture)} | {e.networks} | {e.epochs} "
            f"| {markdown_text(e.test)} | {100 * e.mean:.2f} ± {100 * e.std:.2f} % | {_random_real_cell(e)} "
            f"| {_full_data_cell(e)} |"
            for e in bank.evaluations
        ]
        lines += ["", "Random real: fresh networks trained the same way (same protocol and network seeds) on a "
                  "random real subset with as many images per class as the bank's storage buys. Full data: the "
                  "same network and protocol trained on the whole real training split (epochs as given). "
                  "Protocols: `standard` is the DC/DSA evaluation of the published figures (ConvNet-3 of "
                  "width 128, SGD, 300 epochs or 1000 with DSA); `recipe` is the bank's own training recipe."]
    else:
        lines.append("No evaluation recorded yet.")
    lines += ["", "### Provenance", ""]
    if bank.provenance:
        text = json.dumps(bank.provenance, indent=2, sort_keys=True, ensure_ascii=True)
        fence = code_fence(text)
        lines += [f"{fence}json", text, fence]
    else:
        lines.append("No provenance recorded.")
    return lines


def _best_score(e: EvaluationResult) -> str:
    protocol = f", {e.protocol}" if e.protocol else ""
    return f"{100 * e.mean:.2f} ± {100 * e.std:.2f} % ({markdown_text(e.architecture)}{protocol})"


def _protocol_cell(e: EvaluationResult) -> str:
    overrides = e.extra.get("protocol_overrides")
    if not e.protocol:
        return "not recorded"
    if isinstance(overrides, dict) and overrides:
        return f"{e.protocol} ({', '.join(f'{k}={v}' for k, v in sorted(overrides.items()))})"
    return e.protocol


def _random_real_cell(e: EvaluationResult) -> str:
    base = e.baselines.get(RANDOM_REAL)
    if base is None:
        return "not measured"
    per_class = base.extra.get("per_class")
    shots = f"{per_class}/class: " if per_class is not None else ""
    return f"{shots}{100 * base.mean:.2f} ± {100 * base.std:.2f} % ({100 * e.improvement_over_random:+.2f})"


def _full_data_cell(e: EvaluationResult) -> str:
    base = e.baselines.get(FULL_DATA)
    if base is None:
        return "not measured"
    return (f"{100 * base.mean:.2f} ± {100 * base.std:.2f} % ({base.epochs} epochs; gap "
            f"{100 * e.gap_to_full_data:.2f})")
