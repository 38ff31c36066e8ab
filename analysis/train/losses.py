"""The DML losses `carprobe train` offers, all from pytorch-metric-learning (pml), each with the
miner it is usually trained with and documented default hyper-parameters.

=================  ===============================  =========================================  ====  =======
--loss             pml loss (defaults)              miner (defaults)                           ρ     loss lr
=================  ===============================  =========================================  ====  =======
contrastive        ContrastiveLoss                  DistanceWeightedMiner                      yes   –
                   (pos_margin 0, neg_margin 1)     (cutoff 0.5, no upper cap)
triplet            TripletMarginLoss (margin 0.2)   TripletMarginMiner (margin 0.2, semihard); yes   –
                                                    with ρ: DistanceWeightedMiner as Roth
margin             MarginLoss (margin 0.2, beta     DistanceWeightedMiner                      yes   5e-4
                   1.2 learnt per class, nu 0)      (cutoff 0.5, no upper cap)
multisimilarity    MultiSimilarityLoss (alpha 2,    MultiSimilarityMiner (epsilon 0.1)         ext.  –
                   beta 50, base 0.5)
lifted             GeneralizedLiftedStructureLoss   – (all pairs of the batch)                 ext.  –
                   (neg_margin 1, pos_margin 0)
npair              NPairsLoss (dot product of       – (one positive pair per class)            no    –
                   normalised embeddings)
ntxent             NTXentLoss (temperature 0.07)    – (all pairs of the batch)                 no    –
proxynca           ProxyNCALoss (softmax_scale 9)   –                                          no    1e-3
proxyanchor        ProxyAnchorLoss (margin 0.1,     –                                          no    1e-3
                   alpha 32)
normalizedsoftmax  NormalizedSoftmaxLoss            –                                          no    1e-3
                   (temperature 0.05)
arcface            ArcFaceLoss (margin 28.6°,       –                                          no    1e-3
                   scale 64)
cosface            CosFaceLoss (margin 0.35,        –                                          no    1e-3
                   scale 64)
softtriple         SoftTripleLoss (10 centres per   –                                          no    1e-3
                   class, la 20, gamma 0.1,
                   margin 0.01)
=================  ===============================  =========================================  ====  =======

Choices, in a line each: margin loss with distance-weighted sampling and a learnt per-class β
(lr 5e-4) is Roth et al.'s main setting, and so is distance-weighted sampling for contrastive;
the distance-weighted sampler has no upper distance cap, as in Roth et al.'s code (pml's default
1.4 is what they left commented out: "slightly worse"); ρ-regularisation starts from that
sampler for every triplet loss, triplet included (Roth's rho_distance sampler);
triplet with semi-hard mining follows FaceNet; ProxyNCA's scale 9 equals Roth's proxies and
embeddings scaled to norm 3 (pml multiplies squared distances); the other values are pml's and
the papers' defaults. Classification losses own parameters (proxies, class weights, β) that the
optimizer trains at the "loss lr" (1e-3 = 100 × the trunk lr, ProxyAnchor's multiplier).
ρ-regularisation (``rho.RhoMiner``) applies to the losses whose negatives come from mined tuples;
not to N-pair / NT-Xent (negatives only enter through an anchor's positive pair, which a swap
removes) nor to the proxy losses (no tuples at all). Roth et al. defined and tested it for
triplet losses (contrastive, triplet, margin); on the pair losses (multi-similarity, lifted) it
is carprobe's own extension ("ext." above, in --list-losses and in the report), not a published
recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from blender_addon.core.errors import CarprobeError


@dataclass(frozen=True)
class LossSpec:
    name: str
    loss: str                                  # pml.losses class name
    kind: str                                  # "ranking" (tuples) or "classification" (proxies)
    params: dict[str, Any] = field(default_factory=dict)
    miner: str | None = None                   # pml.miners class name
    miner_params: dict[str, Any] = field(default_factory=dict)
    rho: bool = False                          # ρ-regularisation applicable
    rho_published: bool = True                 # False: ρ on this loss is carprobe's extension
    rho_miner: str | None = None               # base miner under ρ when it differs (Roth: DW)
    rho_miner_params: dict[str, Any] = field(default_factory=dict)
    tuples: str = "triplet"                    # what the loss consumes: "triplet" or "pair"
    loss_lr: float | None = None               # lr of the loss's own parameters (None: it has none)
    summary: str = ""

    def miner_for(self, rho_reg: float) -> tuple[str | None, dict[str, Any]]:
        """(miner class name, its default parameters) a run with this ρ probability uses."""
        if rho_reg > 0 and self.rho_miner:  # Roth's ρ sampler builds on distance-weighted sampling
            return self.rho_miner, self.rho_miner_params
        return self.miner, self.miner_params


# Distance-weighted sampling: distances below 0.5 weighted as 0.5; no upper cap (unit-sphere
# distances are <= 2, so a cutoff of 4 never removes a negative), as Roth et al.'s sampler.
_DW = {"cutoff": 0.5, "nonzero_loss_cutoff": 4.0}
_PROXY_LR = 1e-3

LOSSES: dict[str, LossSpec] = {s.name: s for s in (
    LossSpec("contrastive", "ContrastiveLoss", "ranking", {"pos_margin": 0.0, "neg_margin": 1.0},
             "DistanceWeightedMiner", dict(_DW), rho=True, tuples="triplet",
             summary="pairs pulled to 0, negatives pushed past 1 (L2 on the unit sphere)"),
    LossSpec("triplet", "TripletMarginLoss", "ranking", {"margin": 0.2},
             "TripletMarginMiner", {"margin": 0.2, "type_of_triplets": "semihard"}, rho=True,
             rho_miner="DistanceWeightedMiner", rho_miner_params=dict(_DW),
             tuples="triplet", summary="d(a,p) + margin < d(a,n), semi-hard triplets"),
    LossSpec("margin", "MarginLoss", "ranking",
             {"margin": 0.2, "nu": 0.0, "beta": 1.2, "learn_beta": True, "per_class_beta": True},
             "DistanceWeightedMiner", dict(_DW), rho=True, tuples="triplet", loss_lr=5e-4,
             summary="Wu et al. margin loss with learnt β (Roth et al.'s main setting)"),
    LossSpec("multisimilarity", "MultiSimilarityLoss", "ranking", {"alpha": 2.0, "beta": 50.0, "base": 0.5},
             "MultiSimilarityMiner", {"epsilon": 0.1}, rho=True, rho_published=False, tuples="pair",
             summary="Wang et al. multi-similarity loss and pair mining"),
    LossSpec("lifted", "GeneralizedLiftedStructureLoss", "ranking", {"neg_margin": 1.0, "pos_margin": 0.0},
             rho=True, rho_published=False, tuples="pair", summary="generalised lifted structure over all pairs"),
    LossSpec("npair", "NPairsLoss", "ranking", {}, summary="N-pair softmax over one positive pair per class"),
    LossSpec("ntxent", "NTXentLoss", "ranking", {"temperature": 0.07},
             summary="InfoNCE / NT-Xent over all pairs (generalises N-pair)"),
    LossSpec("proxynca", "ProxyNCALoss", "classification", {"softmax_scale": 9.0}, loss_lr=_PROXY_LR,
             summary="NCA to one proxy per class"),
    LossSpec("proxyanchor", "ProxyAnchorLoss", "classification", {"margin": 0.1, "alpha": 32.0},
             loss_lr=_PROXY_LR, summary="proxies as anchors (Kim et al.)"),
    LossSpec("normalizedsoftmax", "NormalizedSoftmaxLoss", "classification", {"temperature": 0.05},
             loss_lr=_PROXY_LR, summary="softmax over cosine to class weights"),
    LossSpec("arcface", "ArcFaceLoss", "classification", {"margin": 28.6, "scale": 64.0},
             loss_lr=_PROXY_LR, summary="additive angular margin (degrees)"),
    LossSpec("cosface", "CosFaceLoss", "classification", {"margin": 0.35, "scale": 64.0},
             loss_lr=_PROXY_LR, summary="additive cosine margin"),
    LossSpec("softtriple", "SoftTripleLoss", "classification",
             {"centers_per_class": 10, "la": 20.0, "gamma": 0.1, "margin": 0.01},
             loss_lr=_PROXY_LR, summary="several centres per class"),
)}


def loss_spec(name: str) -> LossSpec:
    if name not in LOSSES:
        raise CarprobeError(f"--loss {name!r}: unknown; allowed: {', '.join(LOSSES)}")
    return LOSSES[name]


def loss_table() -> str:
    """The table `carprobe train --list-losses` prints: name, loss, miner, ρ, defaults."""
    rows = [("loss", "kind", "pml loss", "miner", "rho", "loss lr", "defaults")]
    for s in LOSSES.values():
        defaults = ", ".join(f"{k}={v}" for k, v in {**s.params, **{f"miner.{k}": v for k, v in s.miner_params.items()}}.items())
        rows.append((s.name, s.kind, s.loss, s.miner or "-", rho_label(s),
                     "-" if s.loss_lr is None else f"{s.loss_lr:g}", defaults or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("rho: yes = Roth et al.'s ρ-regularisation (triplet losses; distance-weighted base sampler); "
                 "extension = carprobe's own transfer to pair losses, not a published recipe")
    return "\n".join(lines)


def parse_loss_params(loss: str, items: list[str], rho_reg: float = 0.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--loss-param KEY=VALUE` items → (loss_params, miner_params) for `loss`: keys from the
    table's defaults (`--list-losses`), ``miner.KEY`` for the miner the run uses (with ρ, triplet
    mines distance-weighted); each value parsed as the type of its default. CarprobeError names
    the item and what is allowed."""
    spec = loss_spec(loss)
    _, miner_defaults = spec.miner_for(rho_reg)
    loss_params: dict[str, Any] = {}
    miner_params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        is_miner = key.startswith("miner.")
        name = key[len("miner."):] if is_miner else key
        defaults = miner_defaults if is_miner else spec.params
        if not sep or not name or not text:
            raise CarprobeError(f"--loss-param {item!r}: expected KEY=VALUE (miner.KEY=VALUE for the miner)")
        if name not in defaults:
            allowed = [*spec.params, *(f"miner.{k}" for k in miner_defaults)]
            raise CarprobeError(f"--loss-param {item!r}: loss {loss} has no parameter {key!r}; allowed: "
                                f"{', '.join(allowed) or 'none'} (see --list-losses)")
        (miner_params if is_miner else loss_params)[name] = _parse_like(text, defaults[name], item)
    return loss_params, miner_params


def _parse_like(text: str, default: Any, item: str) -> Any:
    """`text` as a value of the type of `default`."""
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise CarprobeError(f"--loss-param {item!r}: true or false expected")
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a finite number"
        raise CarprobeError(f"--loss-param {item!r}: {kind} expected (default {default!r})") from None
    return text


def rho_label(spec: LossSpec) -> str:
    """How ρ-regularisation stands for a loss: "yes" (Roth et al.), "extension" (carprobe's), "no"."""
    if not spec.rho:
        return "no"
    return "yes" if spec.rho_published else "extension"


class TrainingLoss:
    """A pml loss with its miner (optionally wrapped in ρ-regularisation), callable as
    ``training_loss(embeddings, labels) -> scalar``. Labels are contiguous 0..num_classes-1.

    `module` is an nn.Module holding every trainable parameter (proxies, β) for the optimizer
    and for checkpoints; `rho` is the RhoMiner or None.
    """

    def __init__(self, spec: LossSpec, num_classes: int, embedding_dim: int,
                 params: dict[str, Any] | None = None, miner_params: dict[str, Any] | None = None,
                 rho_reg: float = 0.0, seed: int = 0):
        import torch
        from pytorch_metric_learning import losses as pml_losses
        from pytorch_metric_learning import miners as pml_miners

        from .rho import RhoMiner

        self.spec = spec
        params = {**spec.params, **(params or {})}
        miner_name, base_params = spec.miner_for(rho_reg)
        miner_params = {**base_params, **(miner_params or {})}
        if spec.kind == "classification":
            params.update(num_classes=num_classes, embedding_size=embedding_dim)
        if spec.name == "margin":
            if params.pop("per_class_beta", False):
                params["num_classes"] = num_classes
        try:
            self.loss = getattr(pml_losses, spec.loss)(**params)
        except TypeError as exc:
            raise CarprobeError(f"loss {spec.name}: bad parameters {params} ({exc})") from None
        self.miner = None
        if miner_name:
            try:
                self.miner = getattr(pml_miners, miner_name)(**miner_params)
            except TypeError as exc:
                raise CarprobeError(f"miner {miner_name} of loss {spec.name}: bad parameters {miner_params} ({exc})") from None
        self.rho = None
        if rho_reg > 0:
            if not spec.rho:
                raise CarprobeError(f"--rho-reg {rho_reg}: loss {spec.name!r} takes no mined tuples; "
                                    f"ρ-regularisation applies to {', '.join(n for n, s in LOSSES.items() if s.rho)}")
            self.rho = RhoMiner(rho_reg, base_miner=self.miner, tuples=spec.tuples, seed=seed)
            self.miner = self.rho
        self.module = torch.nn.ModuleDict({"loss": self.loss})

    def parameters(self):
        return [p for p in self.module.parameters() if p.requires_grad]

    @property
    def distance(self) -> str:
        """The distance the pml loss compares embeddings with, as a models.DISTANCES name:
        euclidean (LpDistance: contrastive, triplet, margin, lifted, ProxyNCA), cosine, dot, snr."""
        from pytorch_metric_learning import distances

        kinds = ((distances.SNRDistance, "snr"), (distances.LpDistance, "euclidean"),
                 (distances.CosineSimilarity, "cosine"), (distances.DotProductSimilarity, "dot"))
        found = getattr(self.loss, "distance", None)
        for cls, name in kinds:
            if isinstance(found, cls):
                return name
        raise CarprobeError(f"loss {self.spec.name}: distance {type(found).__name__} has no carprobe name")

    def to(self, device) -> "TrainingLoss":
        self.module.to(device)
        return self

    def __call__(self, embeddings, labels):
        indices = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, indices)

    def state_dict(self) -> dict[str, Any]:
        state = {"module": self.module.state_dict()}
        if self.rho is not None:
            state["rho_rng"] = self.rho.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        if self.rho is not None and "rho_rng" in state:
            self.rho.generator.set_state(state["rho_rng"])


def build_loss(name: str, num_classes: int, embedding_dim: int, params: dict | None = None,
               miner_params: dict | None = None, rho_reg: float = 0.0, seed: int = 0) -> TrainingLoss:
    """The loss `name` of the table for `num_classes` training classes."""
    return TrainingLoss(loss_spec(name), num_classes, embedding_dim, params, miner_params, rho_reg, seed)
