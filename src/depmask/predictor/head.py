"""`DependencyHead`: a DEMASK-style predictor of pairwise conditional influence between the masked
positions of one decoding step, from a frozen MDLM's final hidden states.

Shapes: `b` batch, `m` masked slots (padded; `valid` marks the real ones), `d` base-model hidden
size, `dim` head width, `h` attention heads.

What it does: `forward` returns logits `[b, m, m]` whose sigmoid estimates
`D[b, i, j] = TV(p_i(· | x), p_i(· | x, x_j := x̂_j))` — how much committing slot `j` moves the
prediction at slot `i` (row = influenced, column = committed; not symmetric). `predict` returns
the probabilities with the diagonal and every pair touching a padded slot set to 0.

Architecture: per-slot LayerNorm → Linear(d → dim) + offset-from-first-slot embedding
[+ confidence/entropy MLP] (`features.py`); a pre-LN transformer encoder over the m slots with a
key-padding mask and a learned per-head bias on the signed clipped distance `pos_j − pos_i`; a
pairwise scorer (`pair_scorers.py`) `q_i·k_j / sqrt(dim) + MLP([u_i, u_j, u_i ⊙ u_j,
E(pos_j − pos_i) [, attention features of (i, j)]])`, or the lean bilinear one.

What it does not do: compute targets, losses or optimisers (training lives in `train/`), run the
base model, or choose which positions to commit (the decoding scorer/selector does).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depmask.predictor import io
from depmask.predictor.features import (
    SlotEncoder,
    attention_pair_features,
    pair_mask,
    relative_index,
)
from depmask.predictor.pair_scorers import ACTIVATIONS, BilinearScorer, PairScorer


class _RelativeSelfAttention(nn.Module):
    """Multi-head self-attention over slots with a learned bias per head and clipped distance."""

    def __init__(self, dim: int, heads: int, num_rel: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.rel_bias = nn.Embedding(num_rel, heads)
        nn.init.zeros_(self.rel_bias.weight)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, m, dim = x.shape
        q, k, v = self.qkv(x).view(b, m, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)  # [b, h, m, dim/h]
        scores = q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads)  # [b, h, m, m]
        scores = scores + self.rel_bias(rel).permute(0, 3, 1, 2)
        # finite fill: a row with no valid key softmaxes to uniform instead of NaN
        scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = self.drop(scores.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, m, dim)  # [b, m, dim]
        return self.out(out)


class _EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, num_rel: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _RelativeSelfAttention(dim, heads, num_rel, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), rel, valid))
        return x + self.drop(self.ffn(self.norm2(x)))  # [b, m, dim]


class _SetContext(nn.Module):
    """Adds `Linear([mean of the valid slots, log(1 + count)])` to every slot: one summary of the
    whole masked set (DeepSets-style), so that slots see what else is still masked without the
    cost of self-attention. Output `[b, m, dim]`; padded slots neither contribute nor change."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim + 1, dim)

    def forward(self, u: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        keep = valid[:, :, None].to(u.dtype)  # [b, m, 1]
        count = keep.sum(dim=1)  # [b, 1]
        mean = (u * keep).sum(dim=1) / count.clamp_min(1.0)  # [b, dim]
        context = self.proj(torch.cat([mean, torch.log1p(count)], dim=-1))  # [b, dim]
        return u + context[:, None, :] * keep


class _TwoHopRefine(nn.Module):
    """Refines the pair logits with what the first pass says about the rest of the set: committing
    j moves i also through a third slot k that j moves and that moves i. From `p = sigmoid(logits)`
    (0 on the diagonal and padding) it forms, per ordered pair, the two-hop sums `(p p)[i, j] =
    Σ_k p[i, k] p[k, j]`, `(p pᵀ)[i, j]` and `(pᵀ p)[i, j]`, and i's and j's row and column totals,
    and adds a small MLP of them (and the logit) to the logit. Three `[b, m, m]` batched matmuls;
    the last layer starts at zero, so a fresh head scores as without it."""

    FEATURES = 8

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(self.FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, m, _ = logits.shape
        p = torch.sigmoid(logits) * pair_mask(valid).to(logits.dtype)  # [b, m, m]
        pt = p.transpose(1, 2)
        rows, cols = p.sum(dim=2), p.sum(dim=1)  # [b, m]: how much i is moved / moves in all
        feats = torch.stack([logits, p @ p, p @ pt, pt @ p,
                             rows[:, :, None].expand(b, m, m), rows[:, None, :].expand(b, m, m),
                             cols[:, :, None].expand(b, m, m), cols[:, None, :].expand(b, m, m)], dim=-1)
        return logits + self.mlp(feats).squeeze(-1)  # [b, m, m]


class DependencyHead(nn.Module):
    """Predicts the pairwise conditional influence `D[b, i, j]` between masked slots.

    Lightweight by construction. At the defaults (`dim=128, layers=2, heads=4`) on LLaDA-8B shapes
    (`d = 4096`, `m = 32`) — asserted by `tests/predictor/test_head.py::test_budget_llada_8b`:
    - parameters: 1,025,929 ≈ 0.013 % of LLaDA-8B's ~8.0e9 (budget: ≤ 1 %);
    - forward FLOPs (matmuls, as `FlopCounterMode` counts them): 8.94e7 on `[1, 32, 4096]`
      ≈ 0.0011 % of one base forward over l = 512 tokens, 2 · 8.0e9 · 512 ≈ 8.2e12 (budget: ≤ 1 %).
    The input projection d → dim dominates both; the pairwise part grows as m² · dim · (dim / 2).

    Args:
        hidden_size: base model hidden size `d`.
        dim: head width.
        layers: transformer encoder layers over the slots (0 = slots do not see each other before
            the pairwise scorer).
        heads: attention heads per layer (must divide `dim`).
        max_distance: canvas distances are clipped to `±max_distance` before embedding.
        pair_mlp: score pairs with the bilinear term plus an MLP over pair features (default);
            False: the lean scorer, bilinear term plus a learned bias per distance — no
            `[b, m, m, ·]` tensor, for base models so small that the MLP would cost a visible
            fraction of their forward (the embedded model).
        pair_product: with `pair_mlp`, feed `u_i ⊙ u_j` to the pair MLP (default); False drops
            it, the costliest part of the MLP (the bilinear term still multiplies the two slots).
        pair_activation: the pair MLP's nonlinearity, "gelu" (default) or "relu" (cheaper on CPU).
        use_confidence: add an MLP of (confidence, log confidence, entropy) to each slot; then
            `forward` requires `confidence` and `entropy`.
        set_context: add one pooled summary of all the slots (their mean and count) to each slot
            before the encoder (`_SetContext`): a cheap way for a slot to see the rest of the set.
            Default off.
        pair_refine: refine the pair logits once with their two-hop sums and the row / column
            totals of the first pass (`_TwoHopRefine`): indirect influence through a third slot.
            Default off.
        use_attention: feed the base model's captured attention among the slots to the pair scorer
            (`attention_pair_features`: both directions, share and log share, row totals); then
            `forward` requires `attention`, and decoding captures it (as `clad` does). Default off.
        dropout: dropout in the encoder and the pairwise MLP.
        base_fingerprint: fingerprint of the denoiser whose hidden states the head reads.
    """

    def __init__(
        self,
        hidden_size: int,
        dim: int = 128,
        layers: int = 2,
        heads: int = 4,
        max_distance: int = 64,
        use_confidence: bool = True,
        dropout: float = 0.0,
        base_fingerprint: str | None = None,
        pair_mlp: bool = True,
        pair_product: bool = True,
        pair_activation: str = "gelu",
        use_attention: bool = False,
        set_context: bool = False,
        pair_refine: bool = False,
    ):
        super().__init__()
        for name, value, low in (("hidden_size", hidden_size, 1), ("dim", dim, 1), ("layers", layers, 0),
                                 ("heads", heads, 1), ("max_distance", max_distance, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` ({value!r}) must be an int ≥ {low}")
        if dim % heads:
            raise ValueError(f"`heads` ({heads}) must divide `dim` ({dim})")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` ({dropout!r}) must be a number in [0, 1)")
        for name, value in (("use_confidence", use_confidence), ("pair_mlp", pair_mlp), ("pair_product", pair_product),
                            ("use_attention", use_attention), ("set_context", set_context),
                            ("pair_refine", pair_refine)):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` ({value!r}) must be a bool")
        if not isinstance(pair_activation, str) or pair_activation not in ACTIVATIONS:
            raise ValueError(f"`pair_activation` ({pair_activation!r}) must be one of {sorted(ACTIVATIONS)}")
        if base_fingerprint is not None and not isinstance(base_fingerprint, str):
            raise ValueError(f"`base_fingerprint` ({base_fingerprint!r}) must be a str or None")
        self.hidden_size = hidden_size
        self.base_fingerprint = base_fingerprint
        self.use_confidence = use_confidence
        self.use_attention = use_attention
        self.max_distance = max_distance
        self.config: dict[str, Any] = {
            "hidden_size": hidden_size, "dim": dim, "layers": layers, "heads": heads,
            "max_distance": max_distance, "use_confidence": bool(use_confidence),
            "dropout": float(dropout), "base_fingerprint": base_fingerprint, "pair_mlp": pair_mlp,
            "pair_product": pair_product, "pair_activation": pair_activation, "use_attention": use_attention,
            "set_context": set_context, "pair_refine": pair_refine,
        }
        self.training_manifest: dict | None = None  # set by `from_pretrained`
        num_rel = 2 * max_distance + 1
        self.slots = SlotEncoder(hidden_size, dim, max_distance, self.use_confidence)
        self.context = _SetContext(dim) if set_context else None
        self.encoder = nn.ModuleList(_EncoderLayer(dim, heads, num_rel, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.scorer = (PairScorer(dim, max(16, dim // 2), num_rel, dropout, pair_product, pair_activation,
                                   use_attention)
                       if pair_mlp else BilinearScorer(dim, num_rel, use_attention))
        self.refine = _TwoHopRefine() if pair_refine else None

    def _check_inputs(self, hidden, positions, valid, confidence, entropy, attention) -> None:
        if hidden.dim() != 3 or hidden.shape[-1] != self.hidden_size:
            raise ValueError(f"`hidden` must be [b, m, {self.hidden_size}], got shape {tuple(hidden.shape)}")
        bm = tuple(hidden.shape[:2])
        for name, t in (("positions", positions), ("valid", valid)):
            if tuple(t.shape) != bm:
                raise ValueError(f"`{name}` must be [b, m] = {list(bm)} like `hidden`, got shape {tuple(t.shape)}")
        if positions.is_floating_point() or positions.dtype == torch.bool:
            raise ValueError(f"`positions` must be an integer tensor, got {positions.dtype}")
        if self.use_attention:
            if attention is None:
                raise ValueError("`attention` is required: the head was built with use_attention=True")
            if tuple(attention.shape) != (*bm, bm[1]):
                raise ValueError(f"`attention` must be [b, m, m] = {[*bm, bm[1]]} like `hidden`, "
                                 f"got shape {tuple(attention.shape)}")
        if not self.use_confidence:
            return
        for name, t in (("confidence", confidence), ("entropy", entropy)):
            if t is None:
                raise ValueError(f"`{name}` is required: the head was built with use_confidence=True")
            if tuple(t.shape) != bm:
                raise ValueError(f"`{name}` must be [b, m] = {list(bm)} like `hidden`, got shape {tuple(t.shape)}")

    def forward(
        self,
        hidden: torch.Tensor,  # [b, m, d] any float dtype
        positions: torch.Tensor,  # [b, m] long canvas positions
        valid: torch.Tensor,  # [b, m] bool, False on padding
        confidence: torch.Tensor | None = None,  # [b, m] p(x0), used when use_confidence
        entropy: torch.Tensor | None = None,  # [b, m] nats, used when use_confidence
        attention: torch.Tensor | None = None,  # [b, m, m] row attends to column, used when use_attention
    ) -> torch.Tensor:
        """Logits `[b, m, m]` in the head's dtype; row i = influenced slot, column j = committed.

        Every entry is finite, but only `pair_mask(valid)` entries are meaningful (train with it).
        """
        self._check_inputs(hidden, positions, valid, confidence, entropy, attention)
        ref = self.norm.weight
        b, m = hidden.shape[:2]
        if m == 0:
            return hidden.new_zeros((b, 0, 0), dtype=ref.dtype, device=ref.device)
        hidden = hidden.to(device=ref.device, dtype=ref.dtype)
        positions = positions.to(device=ref.device, dtype=torch.long)
        valid = valid.to(device=ref.device, dtype=torch.bool)
        if self.use_confidence:
            confidence = confidence.to(device=ref.device, dtype=ref.dtype)
            entropy = entropy.to(device=ref.device, dtype=ref.dtype)
        att = None
        if self.use_attention:
            att = attention_pair_features(attention.to(device=ref.device, dtype=ref.dtype), valid)  # [b, m, m, F]
        rel = relative_index(positions, valid, self.max_distance)  # [b, m, m]
        u = self.slots(hidden, positions, valid, confidence, entropy)  # [b, m, dim]
        if self.context is not None:
            u = self.context(u, valid)
        for layer in self.encoder:
            u = layer(u, rel, valid)
        u = self.norm(u).masked_fill(~valid[:, :, None], 0)  # [b, m, dim]
        logits = self.scorer(u, rel, att)  # [b, m, m]
        return logits if self.refine is None else self.refine(logits, valid)

    @torch.no_grad()
    def predict(
        self,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
        confidence: torch.Tensor | None = None,
        entropy: torch.Tensor | None = None,
        attention: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`sigmoid(forward)` as float32 `[b, m, m]`, 0 on the diagonal and on pairs touching a
        padded slot. Uses the module's current mode (call `.eval()` to disable dropout)."""
        logits = self(hidden, positions, valid, confidence, entropy, attention)
        probs = torch.sigmoid(logits.float())  # [b, m, m]
        return probs * pair_mask(valid.to(probs.device))

    # ---- checkpoints -------------------------------------------------------------------------

    def check_compatible(self, denoiser: Any) -> None:
        """Raise ValueError if `denoiser`'s fingerprint or hidden size is not this head's, or, for a
        head that reads attention, if it captures other layers than the harvest did."""
        io.check_compatible(self.base_fingerprint, self.hidden_size, denoiser)
        io.check_capture_layers(self.use_attention, self.training_manifest, denoiser)

    def save_pretrained(self, directory: str | Path, training_manifest: dict | None = None) -> Path:
        """Write `config.json` + `model.safetensors` into `directory`; returns the directory.

        `training_manifest` defaults to the one this head was loaded with (if any).
        """
        manifest = training_manifest if training_manifest is not None else self.training_manifest
        return io.write_checkpoint(directory, self.config, self.state_dict(), manifest)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, denoiser: Any = None, map_location: str | torch.device = "cpu"
    ) -> DependencyHead:
        """Load a head saved by `save_pretrained`, in eval mode, in the dtype it was saved in.

        With `denoiser`, refuse (ValueError naming both values) a fingerprint or hidden-size
        mismatch. Missing directory/files raise FileNotFoundError; a bad config ValueError.
        """
        config, state_dict = io.read_checkpoint(directory, map_location)
        if denoiser is not None:
            io.check_compatible(config["base_fingerprint"], config["hidden_size"], denoiser)
            io.check_capture_layers(bool(config.get("use_attention")), config.get("training_manifest"), denoiser)
        config_path = Path(directory) / io.CONFIG_NAME
        try:
            head = cls(**{k: config[k] for k in (*io.ARCHITECTURE_KEYS, *io.OPTIONAL_ARCHITECTURE_KEYS)})
        except ValueError as err:
            raise ValueError(f"{config_path}: invalid architecture ({err})") from err
        dtypes = {t.dtype for t in state_dict.values() if t.is_floating_point()}
        if len(dtypes) == 1:
            head = head.to(dtypes.pop())
        try:
            head.load_state_dict(state_dict, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{Path(directory) / io.WEIGHTS_NAME} does not match {config_path}: {err}") from err
        head.training_manifest = config.get("training_manifest")
        return head.to(map_location).eval()
