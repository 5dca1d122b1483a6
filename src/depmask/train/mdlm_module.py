"""The masked-diffusion training objective for the tiny MDLM, as a LightningModule.

Shapes: `b` batch, `l` canvas, `v` vocabulary.

Forward process (LLaDA's): per sequence draw t ~ U(0, 1), mask each *answer* token with
probability p = (1 − ε)·t + ε (the prompt is never masked), and train the model to recover the
masked tokens: cross-entropy on masked positions weighted by 1/p, summed over the batch and
divided by the batch's number of answer tokens. Per sequence this is LLaDA's bound; over a batch
it is a ratio of sums (consistent, not unbiased), which weighs every answer token alike, where
LLaDA's SFT code divides each sequence by its own answer length first and so weighs a short
answer's tokens more (here: an addition token 1/4, a sudoku4 token 1/16 of a sequence). The
shipped model was trained with this weighting. A training batch's t and masks come from a
generator seeded by (data seed, epoch, batch, rank), so a resumed fit continues the noise of the
uninterrupted one (the shipped model was trained with the global RNG's). Logs `train/loss`,
`val/loss` (the same ratio of sums over the whole val set, with fixed masks), and, each validation,
`val/acc/<task>`: exact-verifier accuracy of one-token-per-step decoding on a few test items. At
the end of `fit` the model is exported with `save_tiny_mdlm` (weights, tokenizer, remote code) to
`export_dir`, with the CLI's resolved config (`train_config.yaml`); the card files of a model it
replaces (README.md, eval.json, TRAINING.md) move to `export_dir/previous/`. The network itself is plain torch
(`depmask.models.tiny_mdlm`); this module only wires loss, metrics and the optimiser.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import Metric

from depmask.models.tiny_mdlm import TinyMDLMConfig, TinyMDLMForMaskedLM, save_tiny_mdlm
from depmask.paths import existing_config
from depmask.stable_hash import stable_int
from depmask.train.export_guard import (
    TRAIN_CONFIG,
    nonfinite_reason,
    resume_schedule,
    skip_export_reason,
    total_steps,
    write_train_config,
)

PREVIOUS = "previous"
# files beside a model's weights that describe that model: its card, table, training notes, config
CARD_FILES = ("README.md", "eval.json", "TRAINING.md", TRAIN_CONFIG)


def check_model_export_dir(directory: str | Path) -> None:
    """Refuse (ValueError) an `export_dir` that holds something other than a tiny MDLM (a head, or
    another model): the export replaces its `config.json` and weights. Checked before training."""
    directory, found = existing_config("export_dir", directory)  # not a file, nor below one
    if found is not None and found.get("model_type") != TinyMDLMConfig.model_type:
        kind = (f"a {found['model_type']!r} model" if "model_type" in found else
                "a dependency head" if "format_version" in found else "a config.json that is not a model's")
        raise ValueError(f"`export_dir` ({str(directory)!r}) holds {kind}; the MDLM export would replace its "
                         "config.json and weights: give the model a directory of its own")


def set_aside_previous_card(directory: Path) -> list[str]:
    """Move the card files of the model an export replaces into `directory/previous/`: left in
    place, its card, accuracy table and training notes described the new weights (and `mdlm
    evaluate` copied the old notes into the new card). Returns the names moved."""
    if not (directory / "config.json").is_file():
        return []  # no model here before: the files, if any, are not a model's card
    moved = [name for name in CARD_FILES if (directory / name).is_file()]
    if moved:  # one model's set: the files of the model before it go (its weights went earlier)
        (directory / PREVIOUS).mkdir(exist_ok=True)
        for name in CARD_FILES:
            (directory / PREVIOUS / name).unlink(missing_ok=True)
        for name in moved:
            os.replace(directory / name, directory / PREVIOUS / name)
    return moved


class RatioOfSums(Metric):
    """sum(numerators) / sum(denominators) over an epoch's updates and every rank's (0 when the
    denominators sum to 0)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("numerator", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("denominator", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, numerator: torch.Tensor, denominator: torch.Tensor) -> None:
        self.numerator += numerator.double().sum()
        self.denominator += denominator.double().sum()

    def compute(self) -> torch.Tensor:
        return (self.numerator / self.denominator.clamp_min(1)).float()


class MDLMModule(L.LightningModule):
    def __init__(
        self,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int = 344,
        max_position_embeddings: int = 64,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        eps: float = 1e-3,
        val_decode_items: int = 32,
        export_dir: str | None = "models/tiny-tasks",
        vocab_size: int | None = None,
        mask_token_id: int | None = None,
        pad_token_id: int | None = None,
        eos_token_id: int | None = None,
    ):
        """A small MDLM (`TinyMDLMConfig`'s architecture) and how it is trained.

        Args:
            hidden_size: model width.
            num_hidden_layers: transformer blocks.
            num_attention_heads: attention heads (must divide `hidden_size`).
            intermediate_size: width of the SwiGLU feed-forward layer.
            max_position_embeddings: the longest sequence (prompt + answer) the model takes.
            lr: AdamW's peak learning rate (linear warm-up, then cosine decay to 10 % over the
                trainer's `max_steps`).
            weight_decay: AdamW's weight decay.
            warmup_steps: optimiser steps of linear warm-up.
            eps: floor of the masking probability (LLaDA's forward-process epsilon).
            val_decode_items: test items per task decoded one token per step at each validation.
            export_dir: where `fit` saves the final model (None: do not export).
            vocab_size: the tokenizer's vocabulary size (taken from the data module when unset).
            mask_token_id: the mask id (the tokenizer's when unset; one given must be the tokenizer's).
            pad_token_id: the pad id (the tokenizer's when unset; one given must be the tokenizer's).
            eos_token_id: the EOS id (the tokenizer's when unset; one given must be the tokenizer's).
        """
        super().__init__()
        if not 0 < eps < 1:
            raise ValueError(f"`eps` ({eps}) must lie in (0, 1)")
        if isinstance(lr, bool) or not (lr > 0 and math.isfinite(lr)):  # NaN fails both
            raise ValueError(f"`lr` ({lr!r}) must be a finite number > 0")
        for name, value, least in (("hidden_size", hidden_size, 1), ("num_hidden_layers", num_hidden_layers, 1),
                                   ("num_attention_heads", num_attention_heads, 1),
                                   ("intermediate_size", intermediate_size, 1),
                                   ("max_position_embeddings", max_position_embeddings, 1),
                                   ("warmup_steps", warmup_steps, 0), ("val_decode_items", val_decode_items, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"`{name}` ({value!r}) must be an int >= {least}")
        if hidden_size % num_attention_heads:
            raise ValueError(f"`hidden_size` ({hidden_size}) must be a multiple of `num_attention_heads` "
                             f"({num_attention_heads})")
        if isinstance(weight_decay, bool) or not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise ValueError(f"`weight_decay` ({weight_decay!r}) must be a finite number >= 0 (a negative one "
                             "grows the weights)")
        if export_dir is not None:
            check_model_export_dir(export_dir)  # a file or a head there is named now, not after the training
        self.save_hyperparameters()
        self.val_loss = RatioOfSums()
        self.model: TinyMDLMForMaskedLM | None = None
        if vocab_size is not None:
            self._build(vocab_size, mask_token_id, pad_token_id, eos_token_id)

    def _build(self, vocab_size, mask_token_id, pad_token_id, eos_token_id) -> None:
        h = self.hparams
        self.model = TinyMDLMForMaskedLM(TinyMDLMConfig(
            vocab_size=vocab_size, hidden_size=h.hidden_size, num_hidden_layers=h.num_hidden_layers,
            num_attention_heads=h.num_attention_heads, intermediate_size=h.intermediate_size,
            max_position_embeddings=h.max_position_embeddings, mask_token_id=mask_token_id,
            pad_token_id=pad_token_id, eos_token_id=eos_token_id,
        ))

    def setup(self, stage: str) -> None:
        tok = self.trainer.datamodule.tokenizer
        ids = {"mask_token_id": tok.mask_token_id, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
        for name, want in ids.items():  # a mask id the tokenizer does not write trains a model no one can decode
            given = self.hparams.get(name)
            if given is not None and given != want:
                raise ValueError(f"`{name}` ({given}) is not the data tokenizer's ({want}); leave it unset to "
                                 "take the tokenizer's")
        longest = getattr(self.trainer.datamodule, "longest", 0)
        if self.hparams.max_position_embeddings < longest:  # an indexing error in the first forward, otherwise
            raise ValueError(f"`max_position_embeddings` ({self.hparams.max_position_embeddings}) is shorter than "
                             f"the data's longest sequence ({longest} tokens, prompt + answer)")
        if self.model is None:
            self._build(len(tok), *ids.values())
            return
        if self.model.config.vocab_size < len(tok):  # a raw indexing error in the first step, otherwise
            raise ValueError(f"`vocab_size` ({self.model.config.vocab_size}) is smaller than the data's tokenizer "
                             f"({len(tok)} tokens); leave it unset to take the tokenizer's")
        for name, want in ids.items():  # `vocab_size` alone: the ids still come from the tokenizer
            if getattr(self.model.config, name) is None:
                setattr(self.model.config, name, want)

    # -- objective ---------------------------------------------------------------------------
    def diffusion_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None):
        weighted, tokens = self.diffusion_terms(batch, generator)
        return weighted / tokens.clamp_min(1)

    def diffusion_terms(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                        noise: tuple[torch.Tensor, torch.Tensor] | None = None):
        """(the batch's 1/p-weighted cross-entropy sum, its number of answer tokens): the loss is
        their ratio, and over several batches the ratio of their sums. `noise`: the (t [b, 1],
        uniforms [b, l]) to mask with, else drawn from `generator`."""
        ids, am, ans = batch["input_ids"], batch["attention_mask"], batch["answer_mask"]  # [b, l]
        b = ids.shape[0]
        if noise is None:
            noise = (torch.rand(b, 1, device=ids.device, generator=generator),  # t [b, 1]
                     torch.rand(ids.shape, device=ids.device, generator=generator))  # [b, l]
        t, uniforms = noise
        p = (1 - self.hparams.eps) * t + self.hparams.eps
        masked = ans & (uniforms < p)  # [b, l]
        noisy = torch.where(masked, self.model.config.mask_token_id, ids)
        logits = self.model(input_ids=noisy, attention_mask=am).logits  # [b, l, v]
        ce = F.cross_entropy(logits.float().transpose(1, 2), ids, reduction="none")  # [b, l]
        return (ce / p * masked).sum(), ans.sum()

    def training_step(self, batch, batch_idx):
        loss = self.diffusion_loss(batch, generator=self._noise(batch_idx, batch["input_ids"].device))
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def _noise(self, batch_idx: int, device: torch.device) -> torch.Generator:
        """The generator of a training batch's t and masks: a function of (data seed, epoch, batch,
        rank) alone, so a resumed fit draws the noise the uninterrupted one would (from the global
        RNG, which checkpoints do not hold, a resume replayed the noise of the fit's first steps)."""
        seed = getattr(self.trainer.datamodule, "seed", 0)
        key = stable_int("mdlm-noise", seed, self.current_epoch, batch_idx, self.global_rank) % 2**63
        return torch.Generator(device=device).manual_seed(key)

    @staticmethod
    def item_noise(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's (t, uniforms over its own tokens), from a generator keyed by the row's tokens:
        the same for an item in any batch, at any padding, on any rank. Keyed by batch (a generator
        per `batch_idx` over the padded batch), `val/loss` of the shipped model read 0.215, 0.192
        and 0.177 at val batch sizes 96, 128 and 256."""
        ids, am = batch["input_ids"].cpu(), batch["attention_mask"].cpu().bool()
        t = torch.empty(ids.shape[0], 1)
        uniforms = torch.ones(ids.shape, dtype=torch.float32)  # padding: never masked (not an answer token)
        for r in range(ids.shape[0]):
            g = torch.Generator().manual_seed(stable_int("mdlm-val-noise", *ids[r][am[r]].tolist()) % 2**63)
            t[r] = torch.rand(1, generator=g)
            uniforms[r, am[r]] = torch.rand(int(am[r].sum()), generator=g)
        device = batch["input_ids"].device
        return t.to(device), uniforms.to(device)

    def validation_step(self, batch, batch_idx):
        # fixed masks per item: comparable across epochs, batch sizes and ranks
        weighted, tokens = self.diffusion_terms(batch, noise=self.item_noise(batch))
        # the objective over the whole val set: a ratio of sums over batches (and, under DDP, over
        # every rank's share), not a mean of per-batch ratios weighted by sequences
        self.val_loss.update(weighted.detach(), tokens)
        self.log("val/loss", self.val_loss, prog_bar=True, on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        if self.hparams.val_decode_items < 1 or self.trainer.sanity_checking:
            return
        from depmask.eval import decode_accuracy

        dm = self.trainer.datamodule
        self.model.eval()
        for task in dm.tasks:
            acc = decode_accuracy(self.model, dm.tokenizer, task, n=self.hparams.val_decode_items,
                                  seed=dm.seed)
            self.log(f"val/acc/{task.name}", acc, prog_bar=task.name == "sudoku4")
        self.model.train()

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr,
                                betas=(0.9, 0.98))
        # the fit's real length, whether `max_steps` or `max_epochs` bounds it (it assumed 10,000
        # steps whenever `max_steps` was unset); warm-up no longer than the fit
        total = total_steps(self.trainer)
        warm = min(self.hparams.warmup_steps, total)

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            frac = min(1.0, (step - warm) / max(1, total - warm))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self) -> None:
        resume_schedule(self.trainer)  # after the checkpoint's restore: this fit's schedule at its step

    def on_fit_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            reason = skip_export_reason(self.trainer) or nonfinite_reason(self.model)
            if reason is not None:
                print(f"not exporting to {self.hparams.export_dir}: {reason}")
                return
            directory = Path(self.hparams.export_dir).expanduser()
            moved = set_aside_previous_card(directory)
            out = save_tiny_mdlm(self.model.cpu().float(), directory, self.trainer.datamodule.tokenizer)
            write_train_config(self, out)
            print(f"exported the model to {out}")
            if moved:
                print(f"moved the replaced model's {', '.join(moved)} to {directory / PREVIOUS}/ (they describe "
                      f"that model); `depmask mdlm evaluate --model {directory}` writes this one's card")
