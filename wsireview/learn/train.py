"""Training the attention-MIL model: losses, candidate sampling, early stopping, cross-validation.

The loss of a batch of slides:
- slide BCE on slides with a label (positive label = 1, any other label = 0);
- ``instance_weight`` x instance BCE on reviewed patches (lesion = 1, not lesion = 0);
- ``bag_instance_weight`` x attention distillation: the instance head learns, class-balanced
  within each slide, what the attention found in positive slides and that every patch of a
  negative slide is negative. Without it the instance head would know nothing before the first
  verdict and uncertainty sampling would be noise. Set it to 0 for the plain two-term loss;
- ``attention_weight`` x attention supervision: a confirmed lesion patch (and, with a smaller
  weight, its look-alikes) should get more attention than its slide's average patch, a rejected
  one or an artifact's look-alike less (a BCE on the attention logit minus the bag's mean logit).

Verdicts reach look-alike patches as soft labels (see ``wsireview.learn.lookalike``): the
instance and attention terms weigh each row by how sure its label is (1 for a verdict).

Large slides are trained on at most ``max_instances`` patches per step: every reviewed patch,
the slide's top candidates by a label-contrast direction (mean of patches from positive slides
minus mean from negative slides, in the whitened feature space), and a fresh random fill each
epoch. Scoring always uses every patch. Training is deterministic for a seed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adamw import adamw as adamw_update

from wsireview.devices import CPU, fitted_batch_size
from wsireview.learn.metrics import accuracy, roc_auc
from wsireview.learn.model import GatedAttentionMIL, pad_bags


@dataclass
class TrainParams:
    hidden: int = 32
    instance_hidden: int = 32  # the instance head's own hidden layer (0: it shares the slide head's)
    attention: int = 16
    dropout: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_epochs: int = 30
    min_epochs: int = 10
    patience: int = 8
    batch_bags: int = 16
    max_instances: int = 128
    candidate_share: float = 0.5
    instance_weight: float = 1.0
    bag_instance_weight: float = 0.5
    attention_weight: float = 0.5  # attention supervision from verdicts (0 = attention learns from slide labels only)
    spread: float = 0.5  # weight of a verdict's soft label on its nearest look-alike (0 = no spreading)
    val_fraction: float = 0.25
    folds: int = 3
    pca_dim: int | None = None  # None: chosen from the data (see Preprocessor.fit); 0: no projection
    threads: int = 1  # torch threads for a round after embedding: the matrices are small, and extra
    # threads wait for each other; on a busy 2-core machine two threads made training 6x slower and
    # loading 7x slower
    parallel_folds: int = 2  # cross-validation folds trained at once, each in a thread of its own:
    # the GIL is free inside torch's kernels, so two folds take about 0.65 of the time of one after the other
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class BagData:
    """One slide's preprocessed features and what is known about it."""

    slide_id: int
    x: torch.Tensor  # (N, K) float32
    target: float | None  # 1 / 0 / None (no label)
    inst: torch.Tensor  # (N,) float32 instance labels, NaN where the patch has none
    inst_w: torch.Tensor  # (N,) how sure each label is: 1 for a verdict, < 1 for a look-alike
    att: torch.Tensor  # (N,) attention targets: 1 more, 0 less than average, NaN none

    @property
    def labelled(self) -> bool:
        return self.target is not None

    @property
    def reviewed(self) -> bool:
        return bool((~torch.isnan(self.inst)).any())


def make_bag(slide_id: int, x: torch.Tensor, target: float | None, positions: np.ndarray, labels: np.ndarray,
             weights: np.ndarray | None = None, attention: np.ndarray | None = None) -> BagData:
    """A bag with instance labels ``labels`` at rows ``positions`` (weights 1 unless given) and
    optional per-row attention targets (NaN where none)."""
    inst = torch.full((x.shape[0],), float("nan"))
    inst_w = torch.zeros(x.shape[0])
    if len(positions):
        rows = torch.as_tensor(positions, dtype=torch.long)
        inst[rows] = torch.as_tensor(labels, dtype=torch.float32)
        inst_w[rows] = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else 1.0
    att = torch.as_tensor(attention, dtype=torch.float32) if attention is not None else torch.full_like(inst, float("nan"))
    return BagData(slide_id, x, target, inst, inst_w, att)


def contrast_direction(bags: list[BagData]) -> torch.Tensor | None:
    """Mean patch of the positive slides minus mean patch of the negative ones (None without both)."""
    means = {}
    for cls in (1.0, 0.0):
        members = [b.x for b in bags if b.target == cls]
        if not members:
            return None
        means[cls] = torch.stack([x.sum(0) for x in members]).sum(0) / sum(x.shape[0] for x in members)
    return means[1.0] - means[0.0]


@dataclass
class Batch:
    """Rows of several bags, padded to one width: what a training step sees."""

    x: torch.Tensor  # (B, W, K)
    inst: torch.Tensor  # (B, W), NaN where unknown or padding
    mask: torch.Tensor  # (B, W) True for real rows
    targets: list[float | None]
    inst_w: torch.Tensor | None = None  # (B, W) label weights, 0 where unknown
    att: torch.Tensor | None = None  # (B, W) attention targets, NaN where none


class BagSampler:
    """Draws the rows of a batch of bags, gathered from each bag where it lies.

    A bag of at most ``max_instances`` patches is used whole. A larger one gives its priority rows
    (every reviewed patch and its top patches along the label-contrast direction) plus a random
    fill drawn with replacement from its other rows (a rare repeat is harmless and the draw costs
    microseconds instead of a permutation of the whole bag). The bags are not packed into one
    tensor: that was a copy of the training slides' features per model, two at once while folds
    train in parallel (2 x 850 MB at 5M patches).
    """

    def __init__(self, bags: list[BagData], direction: torch.Tensor | None, params: TrainParams) -> None:
        self.bags = bags
        self.limit = params.max_instances
        self.sizes = np.array([b.x.shape[0] for b in bags], dtype=np.int64)
        self.width = int(min(self.limit, self.sizes.max(initial=0)))
        n_top = int(params.max_instances * params.candidate_share)
        self.priority: list[np.ndarray] = []
        self.rest: list[np.ndarray] = []
        for b in bags:
            n = b.x.shape[0]
            if n <= self.limit:
                self.priority.append(np.arange(n))
                self.rest.append(np.zeros(0, np.int64))
                continue
            # Verdicts first, then look-alikes with a soft label or attention target, then the top
            # of the contrast direction; the first occurrence of each row counts.
            known = (~torch.isnan(b.inst)).numpy()
            hard = np.flatnonzero(known & (b.inst_w.numpy() >= 1.0))
            soft = np.flatnonzero((known & (b.inst_w.numpy() < 1.0)) | ~torch.isnan(b.att).numpy())
            top = torch.topk(b.x @ direction, min(n_top, n)).indices.numpy() if direction is not None else hard[:0]
            order = np.concatenate([hard, soft, top])
            _, first = np.unique(order, return_index=True)
            priority = order[np.sort(first)][: self.limit]
            self.priority.append(priority)
            self.rest.append(np.setdiff1d(np.arange(n), priority, assume_unique=True))
        # A step gathers its rows with one index per tensor, not four per bag: the labels of all
        # bags side by side (12 bytes a patch), and the features from the one matrix the bags are
        # views of, when they are (a round's bags are; see shared_rows).
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.inst = torch.cat([b.inst for b in bags]) if bags else torch.zeros(0)
        self.inst_w = torch.cat([b.inst_w for b in bags]) if bags else torch.zeros(0)
        self.att = torch.cat([b.att for b in bags]) if bags else torch.zeros(0)
        self.matrix, self.offsets = shared_rows([b.x for b in bags])

    def draw(self, which: list[int], rng: np.random.Generator) -> Batch:
        """The rows of bags ``which`` (indices into the sampler's bags) for one step."""
        shape = (len(which), self.width)
        picked = np.zeros(shape, np.int64)  # row within its bag; padding points at row 0, masked
        counts = np.zeros(len(which), np.int64)
        for row, j in enumerate(which):
            rows = self.priority[j]
            fill = min(self.limit, self.sizes[j]) - rows.size
            if fill > 0:
                rows = np.concatenate([rows, self.rest[j][rng.integers(0, self.rest[j].size, fill)]])
            picked[row, : rows.size] = rows
            counts[row] = rows.size
        mask_np = np.arange(self.width)[None, :] < counts[:, None]
        mask = torch.from_numpy(mask_np)
        where = torch.from_numpy((picked + self.starts[which][:, None]).ravel())
        padding = ~mask
        if self.matrix is not None:
            x = self.matrix.index_select(0, torch.from_numpy((picked + self.offsets[which][:, None]).ravel()))
            x = x.view(*shape, -1)
        else:
            x = torch.stack([self.bags[j].x[torch.from_numpy(picked[row])] for row, j in enumerate(which)])
        inst = self.inst.index_select(0, where).view(shape)
        inst_w = self.inst_w.index_select(0, where).view(shape)
        att = self.att.index_select(0, where).view(shape)
        if bool(padding.any()):
            x[padding] = 0.0
            inst[padding], inst_w[padding], att[padding] = float("nan"), 0.0, float("nan")
        return Batch(x, inst, mask, [self.bags[j].target for j in which], inst_w, att)


def shared_rows(parts: list[torch.Tensor]) -> tuple[torch.Tensor | None, np.ndarray]:
    """The one matrix ``parts`` are row blocks of, and each part's first row in it; ``(None, [])``
    when they are not views of one matrix (then each part is indexed on its own).

    A round's bags are (:func:`wsireview.learn.data.row_views` over the one matrix
    :func:`wsireview.learn.data.load_projected_bags` packs the cohort into), so a training step gathers its rows with one index instead of one per bag."""
    if not parts or any(p.dim() != 2 or p.stride() != (p.shape[1], 1) for p in parts):
        return None, np.zeros(0, np.int64)
    width, storage = parts[0].shape[1], parts[0].untyped_storage()
    if any(p.shape[1] != width or p.dtype != parts[0].dtype or p.untyped_storage().data_ptr() != storage.data_ptr()
           or p.storage_offset() % width for p in parts):
        return None, np.zeros(0, np.int64)
    rows = storage.nbytes() // (parts[0].element_size() * width)
    matrix = torch.empty(0, dtype=parts[0].dtype).set_(storage, 0, (rows, width), (width, 1))
    return matrix, np.array([p.storage_offset() // width for p in parts], dtype=np.int64)


class AdamW:
    """torch's AdamW, stepped through its functional form (``torch.optim.adamw.adamw``).

    The updates are those of ``torch.optim.AdamW`` (a test checks them step for step), but
    constructing any ``torch.optim.Optimizer`` makes torch import its compiler stack
    (``torch._dynamo``, about 2 s the first time in a process: a fifth of a retrain round's
    budget, paid by every `wsireview retrain`); the functional form imports nothing.
    """

    def __init__(self, params, lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.tensor(0.0) for _ in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of the parameters that have a gradient (as torch.optim skips the others)."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        adamw_update(
            [self.params[i] for i in live], [self.params[i].grad for i in live],
            [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live], [],
            [self.steps[i] for i in live], foreach=True, amsgrad=False, beta1=self.betas[0],
            beta2=self.betas[1], lr=self.lr, weight_decay=self.weight_decay, eps=self.eps, maximize=False,
        )


@dataclass
class FitInfo:
    epochs: int
    best_epoch: int
    val_slides: int
    history: list[float] = field(default_factory=list)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch threads (0 = leave as is), restoring the count afterwards."""
    previous = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_GLOBAL_RNG = threading.Lock()


def seeded_model(in_dim: int, params: TrainParams, seed: int) -> GatedAttentionMIL:
    """A new model whose initial weights and dropout masks depend on ``seed`` alone.

    The layers draw their initial weights from torch's global generator: that happens under a
    lock with the seed set (and the caller's random state restored), so folds starting in
    parallel threads cannot interleave. Dropout then uses the model's own generator. Every kernel
    used here (linear, softmax, bmm, gather/index on CPU) is deterministic, so
    ``torch.use_deterministic_algorithms`` would add nothing on CPU but a ~3 s import of torch's
    compiler stack; it is not switched on.
    """
    with _GLOBAL_RNG:
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = GatedAttentionMIL(in_dim, params.hidden, params.attention, params.dropout,
                                      instance_hidden=params.instance_hidden,
                                      generator=torch.Generator().manual_seed(seed))
        finally:
            torch.random.set_rng_state(state)
    return model


def distillation_loss(att: torch.Tensor, inst: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Teach the instance head what attention found, class-balanced within each slide.

    In a positive slide a patch counts as lesion with weight ``a / max a`` (its attention relative
    to the slide's top patch) and as not lesion with the rest; both sides are normalised so a
    handful of lesion patches weigh as much as the thousands around them. In a negative slide
    every patch is not lesion.
    """
    att = att.detach()
    rel = (att / att.amax(dim=1, keepdim=True).clamp_min(1e-12)) * y[:, None]
    m = mask.float()
    w_pos = rel * m
    w_neg = (1.0 - rel) * m
    w_pos = w_pos / w_pos.sum(1, keepdim=True).clamp_min(1e-12)
    w_neg = w_neg / w_neg.sum(1, keepdim=True).clamp_min(1e-12)
    pos_loss = (w_pos * F.softplus(-inst)).sum(1)
    neg_loss = (w_neg * F.softplus(inst)).sum(1)
    return (pos_loss + neg_loss).mean()


def batch_loss(model: GatedAttentionMIL, batch: Batch, params: TrainParams, slide_only: bool = False) -> torch.Tensor:
    x, mask, inst_y, targets = batch.x, batch.mask, batch.inst, batch.targets
    out = model(x, mask)
    inst = out["instance_logit"].masked_fill(~mask, 0.0)
    terms = []
    labelled = [i for i, t in enumerate(targets) if t is not None]
    if labelled:
        idx = torch.tensor(labelled, device=x.device)
        y = torch.tensor([targets[i] for i in labelled], dtype=torch.float32, device=x.device)
        terms.append(F.binary_cross_entropy_with_logits(out["slide_logit"][idx], y))
        if slide_only:
            return terms[0]
        if params.bag_instance_weight > 0:
            terms.append(params.bag_instance_weight * distillation_loss(out["attention"][idx], inst[idx], mask[idx], y))
    known = ~torch.isnan(inst_y)
    if params.instance_weight > 0 and bool(known.any()):
        # Class-balanced: the few lesion verdicts weigh as much as the many rejections; each row
        # weighs as sure as its label is (look-alikes less than verdicts).
        logits, labels = inst[known], inst_y[known]
        weights = batch.inst_w[known] if batch.inst_w is not None else torch.ones_like(labels)
        per = F.binary_cross_entropy_with_logits(logits, (labels >= 0.5).float(), reduction="none") * weights
        parts = [per[labels == c].sum() / weights[labels == c].sum().clamp_min(1e-6)
                 for c in (0.0, 1.0) if bool((labels == c).any())]
        terms.append(params.instance_weight * torch.stack(parts).mean())
    if params.attention_weight > 0 and batch.att is not None:
        term = attention_supervision(out["attention_logit"], mask, batch.att, batch.inst_w)
        if term is not None:
            terms.append(params.attention_weight * term)
    return torch.stack(terms).sum() if terms else torch.zeros((), requires_grad=True, device=x.device)


def attention_supervision(logits: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
                          weight: torch.Tensor | None) -> torch.Tensor | None:
    """BCE of each targeted row's attention logit minus its bag's mean logit against the target
    (1: more attention than the slide's average patch, 0: less); softmax ignores a shift of all
    logits, so only this difference means anything. Class-balanced like the instance term."""
    has = ~torch.isnan(target) & mask
    if not bool(has.any()):
        return None
    finite = logits.masked_fill(~mask, 0.0)
    centre = finite.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp_min(1)
    rel = (finite - centre)[has]
    y = target[has]
    w = weight[has].clamp_min(1e-3) if weight is not None else torch.ones_like(y)
    per = F.binary_cross_entropy_with_logits(rel, y, reduction="none") * w
    parts = [per[y == c].sum() / w[y == c].sum() for c in (0.0, 1.0) if bool((y == c).any())]
    return torch.stack(parts).mean()


def split_validation(bags: list[BagData], fraction: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Hold out about ``fraction`` of the labelled slides, stratified, when each class can spare one."""
    by_class: dict[float, list[int]] = {}
    for i, b in enumerate(bags):
        if b.target is not None:  # labelled
            by_class.setdefault(b.target, []).append(i)
    if len(by_class) < 2 or min(len(v) for v in by_class.values()) < 2 or sum(map(len, by_class.values())) < 4:
        return list(range(len(bags))), []
    val: list[int] = []
    for members in by_class.values():
        members = list(rng.permutation(members))
        val.extend(int(m) for m in members[: max(1, int(round(fraction * len(members))))])
    val_set = set(val)
    return [i for i in range(len(bags)) if i not in val_set], sorted(val)


def on_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with its tensors on ``device`` (itself on the CPU: bags are drawn there)."""
    if device.type == "cpu":
        return batch
    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)

    return dataclasses.replace(batch, x=move(batch.x), inst=move(batch.inst), mask=move(batch.mask),
                               inst_w=move(batch.inst_w) if batch.inst_w is not None else None,
                               att=move(batch.att) if batch.att is not None else None)


def fit(
    bags: list[BagData], params: TrainParams, seed: int, epochs: int | None = None, device: torch.device = CPU,
) -> tuple[GatedAttentionMIL, FitInfo]:
    """Train on ``bags``; with ``epochs`` None, early-stop on a held-out split of labelled slides.

    The stopping criterion is the held-out slides' slide loss: what cross-validation measures.

    With a fixed ``epochs`` (or when too few slides can be held out) all bags are trained on.
    On a GPU ``device`` the model and each drawn batch move there (same draws, same batch sizes,
    same initial weights); the model comes back on the CPU.
    """
    rng = np.random.default_rng(seed)
    with torch_threads(params.threads):  # per thread: folds run in threads of their own
        if epochs is None:
            train_idx, val_idx = split_validation(bags, params.val_fraction, rng)
        else:
            train_idx, val_idx = list(range(len(bags))), []
        max_epochs = epochs if epochs is not None else params.max_epochs
        train = [bags[i] for i in train_idx if bags[i].labelled or bags[i].reviewed]
        val = [bags[i] for i in val_idx]
        direction = contrast_direction([bags[i] for i in train_idx])
        sampler = BagSampler(train, direction, params)
        val_batch = (BagSampler(val, direction, params).draw(list(range(len(val))), np.random.default_rng([seed, 7]))
                     if val else None)
        model = seeded_model(bags[0].x.shape[1], params, seed).to(device)
        if val_batch is not None:
            val_batch = on_device(val_batch, device)
        optimiser = AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
        batch = max(2, min(params.batch_bags, len(train) // 4))
        best_loss, best_state, best_epoch, history = float("inf"), None, 0, []
        epoch = 0
        for epoch in range(1, max_epochs + 1):
            model.train()
            order = rng.permutation(len(train))
            for start in range(0, len(order), batch):
                optimiser.zero_grad()
                drawn = on_device(sampler.draw(order[start : start + batch].tolist(), rng), device)
                loss = batch_loss(model, drawn, params)
                if loss.requires_grad:
                    loss.backward()
                    optimiser.step()
            if val_batch is not None:
                model.eval()
                with torch.no_grad():
                    val_loss = float(batch_loss(model, val_batch, params, slide_only=True))
                history.append(val_loss)
                if val_loss < best_loss - 1e-4:
                    best_loss, best_state, best_epoch = val_loss, copy.deepcopy(model.state_dict()), epoch
                elif epoch >= params.min_epochs and epoch - best_epoch >= params.patience:
                    break
        if val and best_state is not None:
            model.load_state_dict(best_state)
        else:
            best_epoch = epoch
        model.eval()
        model.to(CPU)
    return model, FitInfo(epochs=epoch, best_epoch=best_epoch, val_slides=len(val), history=history)


@dataclass
class Prediction:
    slide_probability: float
    attention: np.ndarray  # softmax weights within the bag
    instance_probability: np.ndarray


@torch.no_grad()
def predict(model: GatedAttentionMIL, bags: list[BagData], batch_bags: int = 16,
            device: torch.device = CPU) -> list[Prediction]:
    """Slide probability, attention and instance probability of every patch of every bag.

    On a GPU ``device`` the model runs there on more bags at once (inference: the batch does not
    change the numbers) and is back on the CPU when this returns."""
    model.eval()
    if device.type == "cuda":
        largest = max((b.x.numel() for b in bags), default=0) * 4
        batch_bags = fitted_batch_size(device, batch_bags, 8 * largest)  # inputs plus the heads' activations
        model.to(device)
    try:
        return _predict(model, bags, batch_bags, device)
    finally:
        model.to(CPU)


def _predict(model: GatedAttentionMIL, bags: list[BagData], batch_bags: int, device: torch.device) -> list[Prediction]:
    order = sorted(range(len(bags)), key=lambda i: len(bags[i].x))  # similar sizes pad less
    by_index: dict[int, Prediction] = {}
    for start in range(0, len(order), batch_bags):
        chunk = order[start : start + batch_bags]
        x, mask = pad_bags([bags[i].x for i in chunk])
        if device.type != "cpu":
            x, mask = x.to(device), mask.to(device)
        out = model(x, mask)
        slide_p = torch.sigmoid(out["slide_logit"]).cpu().numpy()
        att = out["attention"].cpu().numpy()
        inst = torch.sigmoid(out["instance_logit"]).cpu().numpy()
        for row, i in enumerate(chunk):
            n = bags[i].x.shape[0]
            by_index[i] = Prediction(float(slide_p[row]), att[row, :n].copy(), inst[row, :n].copy())
    return [by_index[i] for i in range(len(bags))]


def stratified_folds(bags: list[BagData], k: int, rng: np.random.Generator) -> list[list[int]]:
    """``k`` folds of labelled bag indices, each class spread round-robin after a shuffle."""
    folds: list[list[int]] = [[] for _ in range(k)]
    for cls in (0.0, 1.0):
        members = [i for i, b in enumerate(bags) if b.labelled and b.target == cls]
        for j, m in enumerate(rng.permutation(members)):
            folds[j % k].append(int(m))
    return [sorted(f) for f in folds]


@dataclass
class CVResult:
    folds: int
    slide_auc: float | None
    slide_accuracy: float | None
    instance_auc: float | None
    best_epochs: list[int]
    oof_slide: dict[int, float]  # slide id -> out-of-fold bag probability
    oof_instance: dict[int, np.ndarray] = field(default_factory=dict)  # slide id -> out-of-fold P(lesion)
    members: list[list[np.ndarray]] = field(default_factory=list)  # per fold model: P(lesion) of every bag
    member_slide: list[np.ndarray] = field(default_factory=list)  # per fold model: bag probability of every bag
    held_out: list[list[int]] = field(default_factory=list)  # per fold: indices of the bags it held out


@dataclass
class Trained:
    """A round's models: the cross-validation folds' and the final one, trained on every bag."""

    cv: CVResult
    model: GatedAttentionMIL
    info: FitInfo
    final_seconds: float  # what the final model took after the last fold was done


def cross_validate_and_fit(bags: list[BagData], params: TrainParams, seed: int, epochs: int | None = None,
                           on_fold: Callable[[int, int], None] | None = None,
                           device: torch.device = CPU) -> Trained:
    """k-fold cross-validation over the labelled slides (k = min(params.folds, smaller class)), and
    the final model trained on every bag, in the folds' threads.

    Unlabelled slides with reviewed patches train in every fold; instance AUC is measured on the
    verdicts of held-out slides only. Each fold's model also scores every bag: the folds are an
    ensemble whose disagreement is the queue's uncertainty. ``on_fold(done, k)`` after each fold.

    The final model trains for ``epochs``, or, when None, for the median of the epoch counts
    early stopping chose in every fold but the last (each fold stopped on its own held-out
    slides; at least ``min_epochs``): so it starts as soon as those folds are done and trains
    beside the last one, on the core that fold alone would leave idle (3 folds on 2 threads at
    1,000 slides: 8-10 s of a round). Without cross-validation (too few labelled slides) it
    early-stops on its own held-out split.
    """
    labels = [b.target for b in bags if b.labelled]
    k = min(params.folds, sum(1 for t in labels if t == 1), sum(1 for t in labels if t == 0))
    if k < 2:
        t = time.perf_counter()
        model, info = fit(bags, params, seed, epochs=epochs, device=device)
        return Trained(CVResult(0, None, None, None, [], {}), model, info, time.perf_counter() - t)
    folds = stratified_folds(bags, k, np.random.default_rng([seed, 17]))

    def run_fold(f: int, held: list[int]) -> tuple[int, list[Prediction]]:
        held_set = set(held)
        train = [b for i, b in enumerate(bags) if i not in held_set]
        model, info = fit(train, params, seed=seed * 1000 + f + 1, device=device)
        return info.best_epoch, predict(model, bags, device=device)

    # Each fold's model depends on its own seed only (see seeded_model), so running them in
    # parallel threads gives the same numbers as one after the other; the final model's epochs
    # depend on the same folds however the threads interleave.
    final_future: Future | None = None
    with ThreadPoolExecutor(max(1, min(params.parallel_folds, k)), thread_name_prefix="cv-fold") as pool:
        futures = [pool.submit(run_fold, f, held) for f, held in enumerate(folds)]
        if epochs is not None:
            final_future = pool.submit(fit, bags, params, seed, epochs, device)
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()  # a fold's error surfaces here
            if on_fold is not None:
                on_fold(done, k)
            if final_future is None and all(f.done() for f in futures[:-1]):
                first = [f.result()[0] for f in futures[:-1]]
                final_future = pool.submit(fit, bags, params, seed, max(params.min_epochs, int(np.median(first))),
                                           device)
        folds_done = time.perf_counter()
        assert final_future is not None  # submitted at the latest when the last fold was done
        model, info = final_future.result()
    final_seconds = time.perf_counter() - folds_done
    oof: dict[int, float] = {}
    oof_instance: dict[int, np.ndarray] = {}
    members: list[list[np.ndarray]] = []
    member_slide: list[np.ndarray] = []
    inst_y: list[np.ndarray] = []
    inst_p: list[np.ndarray] = []
    best_epochs = []
    for held, future in zip(folds, futures):
        best_epoch, predictions = future.result()
        best_epochs.append(best_epoch)
        members.append([p.instance_probability for p in predictions])
        member_slide.append(np.array([p.slide_probability for p in predictions]))
        for i in held:
            b, pred = bags[i], predictions[i]
            oof[b.slide_id] = pred.slide_probability
            oof_instance[b.slide_id] = pred.instance_probability
            verdict = (~torch.isnan(b.inst) & (b.inst_w >= 1.0)).numpy()
            if verdict.any():
                inst_y.append(b.inst.numpy()[verdict])
                inst_p.append(pred.instance_probability[verdict])
    y = np.array([b.target for b in bags if b.labelled])
    p = np.array([oof[b.slide_id] for b in bags if b.labelled])
    instance_auc = roc_auc(np.concatenate(inst_y), np.concatenate(inst_p)) if inst_y else None
    cv = CVResult(k, roc_auc(y, p), accuracy(y, p), instance_auc, best_epochs, oof, oof_instance, members,
                  member_slide, folds)
    return Trained(cv, model, info, final_seconds)
