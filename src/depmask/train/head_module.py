"""`HeadModule`: trains a `DependencyHead` on harvested influences (loss, metrics, optimiser, export).

Shapes: `b` states, `m` masked positions, `d` hidden; `p` = masked × masked pairs (i ≠ j) of a batch.

Target transform: **BCE on the TV value** (soft labels in [0, 1]). TV influence is a bounded,
probability-like quantity whose mass sits near 0 with a tail of strong dependencies; binary
cross-entropy with a sigmoid output is a proper scoring rule for such targets, so unweighted
(`tv_weight` 0) the head's output is calibrated *on the linear scale the decoder sums* (DEMASK's
budget adds predicted TVs and compares with ε). With `tv_weight` α > 0 (every shipped config: 10)
each pair weighs 1 + α·TV, and the loss is minimised at E[y(1 + αy)] / E[1 + αy], above E[y]:
the head over-predicts wherever TV varies given its inputs (the shipped head on 551 test states
of the embedded model: mean prediction 0.081 against mean TV 0.070; 0.77 against 0.55 in its top
bin), trading calibration for recall of strong dependencies, so `demask`'s ε is not in the
oracle's TV units (the useful ε sits higher). A regression on log TV would spend capacity ordering 1e-4 against 1e-3,
differences no decision depends on; `loss="mse"` and `loss="log_mse"` are kept for comparison.
`loss="bce_prefix"` adds a set-level term aimed at the decision the budget rule makes: per state,
masked positions in confidence order (the order the selector visits them), the summed influence
of every prefix, `C_t = Σ_{i ≠ j < t} D[i, j]`, predicted against harvested, as
`prefix_weight · mean_t (log1p Ĉ_t − log1p C_t)²`.

Metrics (torchmetrics): `train/loss`, `val/loss`, `val/auroc` and `val/ap` (positives: pairs with TV ≥
`positive_threshold`), `val/spearman` (rank correlation with TV over all pairs), `val/precision_at_k` (per
state with at least k pairs, the share of the head's top-k pairs that are positives), and the same AUROC / AP
for the training-free attention score on the same pairs (`val/auroc_attention`, `val/ap_attention`: captured
attention symmetrised with max(A, Aᵀ)); the four are NaN, with a warning, when every val pair is on one side
of `positive_threshold`. At the end of `fit` the best checkpoint (by the checkpoint callback's monitor,
`val/loss` in the shipped configs) is exported (unless its weights hold NaN or infinity) with
`save_pretrained` to `export_dir`, with the training data manifest (the monitor and its best score included),
and logged to wandb as an artifact when the logger is wandb.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MetricCollection, SpearmanCorrCoef
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from depmask.decoding.selector import prefix_cost
from depmask.models.fingerprint import same_model
from depmask.predictor import DependencyHead, pair_mask
from depmask.predictor.io import capture_layers_problem, check_export_dir
from depmask.train.export_guard import (
    log_artifact,
    nonfinite_reason,
    resume_schedule,
    skip_export_reason,
    total_steps,
    write_train_config,
)
from depmask.train.head_metrics import precision_shares

LOSSES = ("bce", "mse", "log_mse", "bce_prefix")


class HeadModule(L.LightningModule):
    def __init__(
        self,
        hidden_size: int = 0,
        base_fingerprint: str | None = None,
        dim: int = 128,
        layers: int = 2,
        heads: int = 4,
        max_distance: int = 64,
        use_confidence: bool = True,
        dropout: float = 0.0,
        pair_mlp: bool = True,
        pair_product: bool = True,
        pair_activation: str = "gelu",
        use_attention: bool = False,
        set_context: bool = False,
        pair_refine: bool = False,
        loss: str = "bce",
        prefix_weight: float = 1.0,
        tv_weight: float = 0.0,
        state_balance: float = 0.0,
        teacher: str | None = None,
        teacher_weight: float = 0.5,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        positive_threshold: float = 0.1,
        precision_k: int = 5,
        export_dir: str | None = "outputs/heads/tiny-tasks",
        training_manifest: dict | None = None,
    ):
        """A dependency head and how it is trained (one argument per line below; the architecture
        arguments are `DependencyHead`'s).

        Args:
            hidden_size: the base model's hidden size (linked from the data module).
            base_fingerprint: the base model's fingerprint (linked from the data module).
            dim: head width.
            layers: transformer encoder layers over the slots (0: slots do not see each other).
            heads: attention heads per encoder layer (must divide `dim`).
            max_distance: canvas distances are clipped to ±max_distance before embedding.
            use_confidence: add an MLP of (confidence, log confidence, entropy) to each slot.
            dropout: dropout in the encoder and the pairwise MLP.
            pair_mlp: score pairs with the bilinear term plus an MLP over pair features.
            pair_product: with `pair_mlp`, feed u_i ⊙ u_j to the pair MLP.
            pair_activation: the pair MLP's nonlinearity, "gelu" or "relu".
            use_attention: feed the base model's captured attention among the slots to the pair scorer.
            set_context: add one pooled summary of all the slots to each slot.
            pair_refine: refine the pair logits once with their two-hop sums.
            loss: "bce" (on the TV value, the default — see the module docstring), "mse", "log_mse",
                "bce_prefix" (BCE plus the prefix-cost term).
            prefix_weight: weight of the prefix-cost term of `bce_prefix`.
            tv_weight: BCE losses weigh each pair by `1 + tv_weight · TV` (0: unweighted), so a
                missed strong dependency costs more than a small one over-predicted.
            state_balance: γ in [0, 1]: BCE losses also weigh each pair by `n_s^(−γ)`, `n_s` the
                number of pairs of its state, rescaled to mean 1 over the batch. 0 (default): every
                pair counts alike, so a state with 16 masked slots (240 pairs) outweighs one with
                5 (20 pairs) twelvefold; 1: every state counts alike.
            teacher: directory of a trained `DependencyHead` for the same base model (distillation):
                BCE losses train on `(1 − teacher_weight) · TV + teacher_weight · teacher's
                prediction`. The teacher is frozen and is not saved with the student; `val/loss`
                stays against the harvested TV alone, so runs with and without one compare.
            teacher_weight: the teacher's share α in [0, 1] of the training target.
            lr: AdamW's peak learning rate (linear warm-up, then cosine decay to 10 %).
            weight_decay: AdamW's weight decay.
            warmup_steps: optimiser steps of linear warm-up.
            positive_threshold: TV at or above which a pair counts as dependent (AUROC / AP).
            precision_k: k of `val/precision_at_k`.
            export_dir: where the best head is saved at the end of `fit` (None: do not export).
            training_manifest: the data module's description of the training data (linked).
        """
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"`loss` ({loss!r}) must be one of {LOSSES}")
        for knob, value in (("prefix_weight", prefix_weight), ("tv_weight", tv_weight),
                            ("weight_decay", weight_decay)):
            if not (value >= 0 and math.isfinite(value)):  # NaN fails both; it made every loss NaN
                raise ValueError(f"`{knob}` ({value}) must be a finite number >= 0")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"`lr` ({lr}) must be a finite number > 0")
        if warmup_steps < 0:
            raise ValueError(f"`warmup_steps` ({warmup_steps}) must be >= 0")
        if not 0.0 <= state_balance <= 1.0:
            raise ValueError(f"`state_balance` ({state_balance}) must lie in [0, 1]")
        if not 0.0 <= teacher_weight <= 1.0:
            raise ValueError(f"`teacher_weight` ({teacher_weight}) must lie in [0, 1]")
        if teacher is not None and loss not in ("bce", "bce_prefix"):
            raise ValueError(f"`teacher` ({teacher!r}) needs a BCE loss, got `loss` {loss!r}")
        if not 0 < positive_threshold < 1:
            raise ValueError(f"`positive_threshold` ({positive_threshold}) must lie in (0, 1)")
        if precision_k < 1:
            raise ValueError(f"`precision_k` ({precision_k}) must be >= 1 (the k of val/precision_at_k)")
        if hidden_size < 1:
            raise ValueError(f"`hidden_size` ({hidden_size}) must be >= 1 (the CLI links it from the harvest)")
        if export_dir is not None:
            check_export_dir(export_dir)
        self.save_hyperparameters()
        self.head = DependencyHead(hidden_size, dim=dim, layers=layers, heads=heads, max_distance=max_distance,
                                   use_confidence=use_confidence, dropout=dropout, base_fingerprint=base_fingerprint,
                                   pair_mlp=pair_mlp, pair_product=pair_product, pair_activation=pair_activation,
                                   use_attention=use_attention, set_context=set_context,
                                   pair_refine=pair_refine)
        # a plain attribute, not a submodule: frozen, outside the optimiser and the checkpoints
        object.__setattr__(self, "_teacher",
                           _load_teacher(teacher, hidden_size, base_fingerprint, training_manifest)
                           if teacher is not None else None)
        self.val_head = MetricCollection({"auroc": BinaryAUROC(), "ap": BinaryAveragePrecision()})
        self.val_attention = self.val_head.clone(postfix="_attention")
        self.val_spearman = SpearmanCorrCoef()
        # precision@k over the states with ≥ k pairs, as sums (reduced over ranks at the epoch's end,
        # as the loss is: torchmetrics' retrieval metric gathered once per update, and ranks with
        # other numbers of val batches issued mismatched collectives)
        self._prec_sum, self._prec_states = 0.0, 0
        self._val_history: dict[int, dict[str, float]] = {}  # global step -> its val metrics (checkpointed)
        self._val_loss_sum, self._val_pairs, self._val_positives = 0.0, 0, 0
        self.exported_metrics: dict[str, float] = {}  # the exported checkpoint's (`on_fit_end`)
        self.exported_path: Path | None = None  # where `on_fit_end` exported the head; None: it did not

    def _pairs(self, batch):
        full = self.head(batch["hidden"], batch["positions"], batch["valid"], batch["confidence"], batch["entropy"],
                         batch["attention"] if self.head.use_attention else None)
        pairs = pair_mask(batch["valid"])  # [b, m, m]
        return full[pairs].float(), batch["tv"][pairs].float(), pairs, full

    def _prefix_term(self, full: torch.Tensor, batch) -> torch.Tensor:
        """mean over states and prefixes t of (log1p Ĉ_t − log1p C_t)², positions in confidence order."""
        valid, pairs = batch["valid"], pair_mask(batch["valid"])
        # stable: tied confidences in index order, as the selector visits them (`_budget_prefix`)
        order = batch["confidence"].float().masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True,
                                                                                          stable=True)
        pred = prefix_cost(torch.sigmoid(full.float()) * pairs, order)  # [b, m]
        true = prefix_cost(batch["tv"].float() * pairs, order)
        live = valid.gather(1, order)  # [b, m]: prefixes that end on a real position
        return ((torch.log1p(pred) - torch.log1p(true)) ** 2)[live].mean()

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, full: torch.Tensor, batch,
              label: torch.Tensor | None = None) -> torch.Tensor:
        """`target`: the harvested TV of each pair (its weight); `label`: what BCE fits (default `target`)."""
        if self.hparams.loss in ("bce", "bce_prefix"):
            weight = 1 + self.hparams.tv_weight * target if self.hparams.tv_weight else None
            if self.hparams.state_balance:
                balance = _state_balance(batch["valid"], self.hparams.state_balance)
                weight = balance if weight is None else weight * balance
            loss = F.binary_cross_entropy_with_logits(logits, target if label is None else label, weight=weight)
            if self.hparams.loss == "bce_prefix":
                loss = loss + self.hparams.prefix_weight * self._prefix_term(full, batch)
            return loss
        pred = torch.sigmoid(logits)
        if self.hparams.loss == "mse":
            return F.mse_loss(pred, target)
        return F.mse_loss(torch.log(pred + 1e-4), torch.log(target + 1e-4))

    def _distilled(self, target: torch.Tensor, batch) -> torch.Tensor:
        """The training target with the teacher's share mixed in (`target` itself without a teacher)."""
        if self._teacher is None or not self.hparams.teacher_weight:
            return target
        teacher = self._teacher.to(batch["hidden"].device)
        with torch.no_grad():
            full = teacher(batch["hidden"], batch["positions"], batch["valid"], batch["confidence"],
                           batch["entropy"], batch["attention"] if teacher.use_attention else None)
        soft = torch.sigmoid(full.float())[pair_mask(batch["valid"])]
        alpha = self.hparams.teacher_weight
        return (1 - alpha) * target + alpha * soft

    def training_step(self, batch, batch_idx):
        logits, target, _, full = self._pairs(batch)
        if target.numel() == 0:  # only one-position states: no pair to fit (a mean over none is NaN);
            return full.sum() * 0.0  # a zero loss on the graph keeps DDP's ranks in step
        loss = self._loss(logits, target, full, batch, label=self._distilled(target, batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=target.numel())
        return loss

    def validation_step(self, batch, batch_idx):
        logits, target, pairs, full = self._pairs(batch)
        if target.numel() == 0:  # a batch of one-position states (the val set's tail often is one):
            return  # nothing to score; its NaN loss made the epoch's val/loss NaN and the export fail
        loss = self._loss(logits, target, full, batch)
        # val/loss is logged at the epoch's end from these sums, reduced over ranks: Lightning's own
        # epoch mean of a per-step log was each rank's share of the val set under DDP
        self._val_loss_sum += float(loss) * target.numel()  # weighted by pairs
        self._val_pairs += target.numel()
        positive = (target >= self.hparams.positive_threshold).long()
        self._val_positives += int(positive.sum())
        pred = torch.sigmoid(logits)
        att = batch["attention"]
        sym = torch.maximum(att, att.transpose(1, 2))[pairs]
        self.val_head.update(pred, positive)
        self.val_attention.update(sym, positive)
        self.val_spearman.update(pred, target)
        shares = precision_shares(full, batch["tv"], pairs, self.hparams.precision_k, self.hparams.positive_threshold)
        self._prec_sum += float(shares.sum())
        self._prec_states += shares.numel()

    def logged_metrics(self) -> set[str]:
        """The names this module logs: what a checkpoint or early-stopping `monitor` can be."""
        return {"train/loss", "val/loss", "val/spearman", "val/precision_at_k",
                "step", "epoch",  # Lightning's checkpoint callback offers these two as well
                *(f"val/{k}" for k in (*self.val_head.keys(), *self.val_attention.keys()))}

    def on_fit_start(self):
        """A `monitor` naming no logged metric (`val/aurco`) failed only after the first epoch's
        training, in Lightning's checkpoint callback; it is named before any step."""
        logged = self.logged_metrics()
        for callback in self.trainer.callbacks:
            monitor = getattr(callback, "monitor", None)
            if isinstance(monitor, str) and monitor not in logged:
                raise ValueError(f"`monitor` ({monitor!r}) of {type(callback).__name__} is not a metric the head "
                                 f"logs; expected one of {', '.join(sorted(logged))}")

    def on_validation_epoch_end(self):
        metrics = {f"val/{k}": v for k, v in {**self.val_head.compute(), **self.val_attention.compute()}.items()}
        metrics["val/spearman"] = self.val_spearman.compute()
        # one collective per epoch on every rank, whatever its number of val batches (MPS has no float64)
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        sums = self.trainer.strategy.reduce(
            torch.tensor([self._val_loss_sum, self._val_pairs, self._prec_sum, self._prec_states,
                          self._val_positives], dtype=dtype, device=self.device), reduce_op="sum")
        loss = float(sums[0] / sums[1]) if sums[1] > 0 else float("nan")  # the same on every rank
        # on the module's device: `sync_dist` all-reduces it where it is, and NCCL takes no CPU tensor
        metrics["val/precision_at_k"] = (sums[2] / sums[3]).float() if sums[3] > 0 else \
            torch.tensor(float("nan"), device=self.device)
        self._prec_sum, self._prec_states = 0.0, 0
        if sums[1] > 0 and int(sums[4]) in (0, int(sums[1])):  # one class only (torchmetrics: AUROC 0.0)
            nan = torch.tensor(float("nan"), device=self.device)
            metrics.update({k: nan for k in metrics if k.startswith(("val/auroc", "val/ap"))})
            if not self.trainer.sanity_checking:
                rank_zero_warn(f"every val pair is {'at or above' if sums[4] else 'below'} `positive_threshold` "
                               f"({self.hparams.positive_threshold}): val/auroc and val/ap are undefined (NaN), so a "
                               "monitor on them chooses nothing; monitor val/loss or val/spearman")
        if not self.trainer.sanity_checking:  # by global step: the exported checkpoint's own metrics
            # (recorded here, before the checkpoint callbacks' `on_validation_end` saves this step)
            self._val_history[int(self.trainer.global_step)] = {
                "val/loss": loss, **{k: float(v) for k, v in metrics.items()}}
        self._val_loss_sum, self._val_pairs, self._val_positives = 0.0, 0, 0
        auroc = metrics.pop("val/auroc")
        # every value is already the whole val set's, the same on every rank: the mean over ranks
        # (sync_dist) leaves it as it is, and Lightning no longer warns that it is per rank
        self.log_dict(metrics, prog_bar=False, sync_dist=True)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/auroc", auroc, prog_bar=True, sync_dist=True)
        for m in (self.val_head, self.val_attention, self.val_spearman):
            m.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["val_history"] = dict(self._val_history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._val_history = {int(k): v for k, v in checkpoint.get("val_history", {}).items()}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = total_steps(self.trainer)
        warm = min(self.hparams.warmup_steps, total)

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(total - warm, 1)
            return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())

        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, schedule),
                                                   "interval": "step"}}

    def on_train_start(self):
        resume_schedule(self.trainer)  # after the checkpoint's restore: this fit's schedule at its step

    def on_fit_end(self):
        if self.hparams.export_dir is None or not self.trainer.is_global_zero:
            return
        reason = skip_export_reason(self.trainer)
        if reason is not None:
            print(f"not exporting to {self.hparams.export_dir}: {reason}")
            return
        ckpt = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        best = {}
        step = int(self.trainer.global_step)  # the weights exported: the last ones unless a best checkpoint loads
        if ckpt and Path(ckpt).is_file():
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
            state, step = saved["state_dict"], int(saved["global_step"])
            self.head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})
            callback = self.trainer.checkpoint_callback
            score = callback.best_model_score
            best = {"checkpoint": ckpt, "monitor": callback.monitor,
                    "best_score": None if score is None or not math.isfinite(float(score)) else float(score)}
        last = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        metrics = self._val_history.get(step)
        # an undefined metric (NaN: no state with `precision_k` pairs, constant predictions) is null: JSON has no NaN
        last = {k: v if math.isfinite(v) else None for k, v in last.items()}
        if metrics is not None:
            metrics = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in metrics.items()}
        manifest = {**(self.hparams.training_manifest or {}), **best,
                    # the exported weights' own validation (the last epoch's where it is unknown)
                    "metrics": metrics if metrics is not None else last,
                    "metrics_step": step if metrics is not None else None}
        if (reason := nonfinite_reason(self.head)) is not None:  # the weights that would be exported
            print(f"not exporting to {self.hparams.export_dir}: {reason}")
            return
        self.exported_metrics = manifest["metrics"]
        path = self.exported_path = self.head.save_pretrained(self.hparams.export_dir, training_manifest=manifest)
        write_train_config(self, path)
        print(f"exported the dependency head to {path}")
        log_artifact(self.trainer.loggers, path, "dependency-head")


def _load_teacher(directory: str, hidden_size: int, base_fingerprint: str | None,
                  training_manifest: dict | None = None) -> DependencyHead:
    """The frozen teacher head at `directory`, refused (ValueError) when it reads another model, or
    attention captured over other layers than this harvest's."""
    head = DependencyHead.from_pretrained(directory)
    if head.hidden_size != hidden_size or not same_model(head.base_fingerprint, base_fingerprint):
        raise ValueError(f"`teacher` ({directory}) was trained for base model {head.base_fingerprint!r} "
                         f"(hidden size {head.hidden_size}); this harvest is {base_fingerprint!r} "
                         f"(hidden size {hidden_size})")
    layers = capture_layers_problem(head.use_attention, head.training_manifest,
                                    (training_manifest or {}).get("capture_layers"))
    if layers:
        raise ValueError(f"`teacher` ({directory}): {layers}")
    return head.float().requires_grad_(False).eval()


def _state_balance(valid: torch.Tensor, gamma: float) -> torch.Tensor:
    """`[p]` per-pair weights `n_s^(−γ)` (`n_s`: pairs of the pair's state), mean 1 over the batch,
    in the order `tensor[pair_mask(valid)]` lists the pairs."""
    pairs = pair_mask(valid)  # [b, m, m]
    per_state = pairs.flatten(1).sum(dim=1).float()  # [b]
    weight = per_state.clamp_min(1.0).pow(-gamma)[:, None, None].expand_as(pairs)[pairs]  # [p]
    return weight * (weight.numel() / weight.sum().clamp_min(1e-12))
