"""`compressdata import`: a released distilled dataset -> a bank file (docs/interop.md).

`add_import_command(subparsers)` registers it on the main parser; `compressdata export --format
ddranking|mtt` (the other direction) is an export format of `compressdata export`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compressdata.errors import ConfigError
from compressdata.interop.layouts import LAYOUTS
from compressdata.interop.presets import DATASETS, METHODS


def add_import_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `import` (sets `func`, returning an exit code)."""
    p = subparsers.add_parser(
        "import", help="turn a released distilled dataset (MTT, DC, DD-Ranking, ... files) into a bank",
        description="Read a released distilled dataset with torch.load(weights_only=True) only (a file that "
                    "needs full unpickling is refused; nothing in it runs) and write a bank that records what "
                    "the files leave out: classes, normalisation or ZCA, the method's evaluation recipe (learned "
                    "lr included) and the files' sha256. Then `compressdata evaluate BANK --test DATASET` "
                    "follows the method's protocol with no further flags.")
    p.add_argument("files", nargs="+", help="the release: a run folder or its files (mtt, ddranking), one "
                   "res_*.pt (dc), one .pt (plain), or an image folder (folder)")
    p.add_argument("--from", dest="layout", required=True, choices=sorted(LAYOUTS),
                   help="mtt: images_best.pt, labels_best.pt, lr_best.pt / syn_lr_best.pt (MTT, FTD, DATM); "
                        "dc: res_<method>_<dataset>_<model>_<ipc>ipc.pt (DC, DSA, DM); plain: (images, labels) "
                        "or a dict; ddranking: images.pt, labels.pt, lr.pt; folder: class sub-folders of images")
    p.add_argument("--out", "-o", required=True, help="bank file to write (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--dataset", default=None, choices=sorted(DATASETS),
                   help="the distilled dataset: classes and the mean/std the method's code uses "
                        "(default: from a dc file's name)")
    p.add_argument("--method", default=None, choices=sorted(METHODS),
                   help="the method that made the files: its published evaluation recipe (required for "
                        "--from mtt; default: from a dc file's name, else compressdata's default protocol)")
    p.add_argument("--model", default=None,
                   help="the network as the method's code names it: ConvNet, ConvNetD4, ConvNetW64, ConvNetBN, "
                        "ResNet18, ResNet18BN, MLP (default: from a dc file's name, else ConvNet)")
    p.add_argument("--lr", type=float, default=None,
                   help="training lr (default: the learned lr in the files; mtt/ftd/datm need one)")
    zca = p.add_mutually_exclusive_group()
    zca.add_argument("--zca", dest="zca", action="store_true", default=None,
                     help="the images are ZCA-whitened (MTT's --zca): fit the whitening on the real training "
                          "split and record it")
    zca.add_argument("--no-zca", dest="zca", action="store_false", help="the images are not ZCA-whitened")
    p.add_argument("--zca-eps", type=float, default=0.1,
                   help="eps of the ZCA whitening (kornia ZCAWhitening, as MTT; default %(default)s)")
    p.add_argument("--data-root", default=None, help="folder of the real training split (for --zca)")
    p.add_argument("--experiment", type=int, default=None,
                   help="dc: which experiment of the file's 'data' list (default 0)")
    p.add_argument("--label-space", default=None, choices=("probabilities", "logits"),
                   help="what float labels are (default: logits for mtt and ddranking, else probabilities "
                        "when every row sums to 1)")
    p.add_argument("--pixels", action="store_true",
                   help="float images are [0, 1] pixels, not in the method's normalised space")
    p.add_argument("--ipc", type=float, default=None,
                   help="images per class the release claims (recorded; default: from a dc file's name)")
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    """`compressdata import`: read, build, write, print what was recorded."""
    from compressdata.interop.importer import import_bank
    from compressdata.loading import save_memory_bank

    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; expected a file path")
    if out.exists() and not args.force:
        raise ConfigError(f"--out {out} exists; pass --force to overwrite it")
    bank = import_bank(args.files, args.layout, dataset=args.dataset, method=args.method, model=args.model,
                       lr=args.lr, zca=args.zca, zca_eps=args.zca_eps, data_root=args.data_root,
                       experiment=args.experiment, label_space=args.label_space, pixels=args.pixels, ipc=args.ipc)
    save_memory_bank(bank, out)
    provenance, recipe, storage = bank.provenance, bank.recipe, bank.storage
    imported = provenance["imported"]
    print(f"wrote {out}: {len(bank)} examples of {provenance['source']['dataset']} ({bank.label_space} labels), "
          f"{storage['floats_stored']} floats stored = IPC {storage['ipc_equivalent']:g}"
          + (f" (the release claims IPC {provenance['budget_ipc']:g})" if "budget_ipc" in provenance else ""))
    if "experiments" in imported:
        print(f"experiment {imported['experiment']} of {imported['experiments']} in the file")
    zca = ", ZCA" if bank.normalization.uses_zca else ""
    print(f"recipe ({provenance['method']['name']}): {recipe.architecture}, lr {recipe.lr:g}, {recipe.epochs} epochs, "
          f"augmentation {recipe.augmentation}, batch {recipe.batch_size}, {recipe.label_loss}; normalisation mean "
          f"{bank.normalization.mean}, std {bank.normalization.std}{zca}")
    for note in imported.get("recipe_deviations", []):
        print(f"note: {note}")
    print(f"evaluate it with: compressdata evaluate {out} --test {provenance['source']['dataset']}")
    return 0
