"""The SAE base class: parameters, the pre-encoder bias, encode/decode, and the loss interface.

Every architecture shares the affine maps and differs only in its activation and sparsity loss:

    x̄   = x − b_dec                         (pre-encoder bias; skipped if apply_b_dec_to_input is False)
    pre = x̄ W_enc + b_enc                   W_enc: [d_in, d_sae]
    f   = σ(pre)                             the architecture's activation (ReLU, TopK, JumpReLU, ...)
    x̂   = f W_dec + b_dec                    W_dec: [d_sae, d_out], row i = feature i's direction

Three kinds of dictionary share these maps, each with any architecture's activation and sparsity:
- an SAE reconstructs its input: d_out = d_in, target = x;
- a transcoder (`d_out=...`) reads one hook and reconstructs another's output y: L = ‖y − ŷ‖² + ..., with no
  pre-encoder bias (b_dec lives in the output space); a training batch is [x, y] side by side, [batch, d_in + d_out];
- a crosscoder (`n_models=M`) reads M models' activations at one site, concatenated (d_in = M·d), and decodes
  each model's block with its own rows W_dec[:, m·d:(m+1)·d]; its L1 weights f_i by Σ_m ‖W_dec_i^m‖ (Lindsey et
  al. 2024), so a feature pays once per model it writes to.

Weights use SAELens's layout and names, so folders move between the two toolkits unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import Tensor, nn

from saekit.errors import InputError
from saekit.saes.batch import LOCAL, BatchReduce
from saekit.saes.provenance import Provenance
from saekit.saes.sparse import Codes, gather, positive_codes, selected_pre_acts, sparse_decode


class LossContext(NamedTuple):
    """What a training step tells the SAE about the loss it should compute."""

    sparsity_coefficient: float = 0.0  # λ of the architecture's sparsity penalty (L1 or L0); 0 turns it off
    l1_weighted_by_decoder_norm: bool = False  # relu: λ Σ f_i ‖W_dec_i‖ (April 2024) instead of λ Σ f_i
    dead: Tensor | None = None  # [d_sae] bool, features that have not fired lately (for AuxK)
    aux_coefficient: float = 0.0  # weight of the auxiliary dead-feature loss (AuxK)
    aux_k: int = 0  # number of dead features the AuxK loss may use per token
    compute_dtype: torch.dtype | None = None  # dtype of the [batch, d_sae] products (None: the SAE's own)
    batch: BatchReduce = LOCAL  # statistics over the global batch, for losses that read it as a whole


PLAIN = LossContext()
"""No penalty, no dead features, the SAE's dtype, one process: what inference-like calls of the training maps use."""


class SAELoss(NamedTuple):
    """A training step's loss and its parts (scalars), plus the feature activations it produced.

    The activations are dense `f` [batch, d_sae] on the dense path, or `codes` + `values` [nnz] on the
    sparse path; `fired`, `l0` and `active_values` read either.
    """

    total: Tensor
    mse: Tensor  # mean over tokens of ‖x − x̂‖² (summed over d_in)
    sparsity: Tensor  # the sparsity penalty before its coefficient (L1 or L0); 0 where none
    auxiliary: Tensor  # the auxiliary loss before its coefficient; 0 where none
    x_hat: Tensor  # [batch, d_in]
    f: Tensor | None = None  # [batch, d_sae] (dense path)
    codes: Codes | None = None  # selected entries (sparse path)
    values: Tensor | None = None  # [nnz] activations at `codes` (sparse path)
    counts: Tensor | None = None  # [d_sae] tokens each feature fired on, where the path counted them

    def active_values(self) -> Tensor:
        """The positive feature activations of the batch, flattened."""
        v = self.f if self.f is not None else self.values
        return v[v > 0]

    def fired(self, d_sae: int) -> Tensor:
        """[d_sae] number of tokens each feature fired on."""
        if self.counts is not None:
            return self.counts
        if self.f is not None:
            return (self.f > 0).sum(0)
        return torch.bincount(self.codes.cols[self.values > 0], minlength=d_sae)

    def l0(self) -> Tensor:
        """Mean number of active features per token."""
        active = int(self.counts.sum()) if self.counts is not None else self.active_values().numel()
        return (active / self.x_hat.shape[0]) * torch.ones(())


class SAE(nn.Module):
    """Base sparse autoencoder; an architecture subclasses it in its own file, sets the class attributes below
    (what the trainer and the formats read about it) and defines `activate` and its losses."""

    arch: ClassVar[str] = ""  # the name `SAE.create`, `saekit train --arch` and cfg.json use
    saelens_architecture: ClassVar[str] = ""  # the `architecture` value it is saved under for SAELens
    saelens_transcoder_architecture: ClassVar[str | None] = None  # its SAELens name as a transcoder, where one exists
    saelens_reads: ClassVar[tuple[str, ...]] = ()  # SAELens `architecture` values loaded as this class
    sparsity_penalty: ClassVar[Literal["l1", "l0"] | None] = None
    """Which TrainConfig coefficient scales `sparsity_loss`: l1_coefficient, l0_coefficient, or none (L0 fixed)."""
    uses_aux_k: ClassVar[bool] = False  # whether `aux_loss` (AuxK on dead features) is part of training
    normalizes_decoder: ClassVar[bool] = True  # whether the default recipe keeps ‖W_dec_i‖ = 1

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        d_out: int | None = None,
        n_models: int = 1,
        apply_b_dec_to_input: bool | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if d_in < 1 or d_sae < 1 or (d_out is not None and d_out < 1):
            raise InputError(f"d_in, d_out and n_features must be positive (got d_in={d_in}, d_out={d_out}, "
                             f"n_features={d_sae})")
        if n_models < 1 or d_in % n_models:
            raise InputError(f"a crosscoder over n_models={n_models} models reads their activations side by side: "
                             f"d_in={d_in} must be n_models times one model's width")
        if d_out is not None and n_models > 1:
            raise InputError("a dictionary is a transcoder (d_out) or a crosscoder (n_models > 1), not both: "
                             "train one transcoder per model")
        if d_out is not None and apply_b_dec_to_input:
            raise InputError("a transcoder's b_dec is in its output space and cannot be subtracted from its input: "
                             "leave apply_b_dec_to_input unset")
        self.d_in, self.d_sae = int(d_in), int(d_sae)
        self.is_transcoder = d_out is not None
        self.d_out = int(d_out) if d_out is not None else self.d_in
        self.n_models = int(n_models)
        self.apply_b_dec_to_input = not self.is_transcoder if apply_b_dec_to_input is None else apply_b_dec_to_input
        self.provenance = Provenance()  # where it reads its model(s): set by whoever trains or loads it
        kw = {"dtype": dtype, "device": device}
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae, **kw))
        self.W_dec = nn.Parameter(torch.empty(d_sae, self.d_out, **kw))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, **kw))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out, **kw))
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Random unit-norm decoder rows, encoder = decoder transpose (OpenAI/Anthropic 2024 init); a transcoder's
        encoder columns are drawn on their own, unit-norm too.

        seed=None draws a fresh seed for a private generator: the global RNG is never read or reseeded.
        On the meta device (shapes only, nothing allocated) there is nothing to initialise."""
        if self.W_dec.is_meta:
            return
        g = torch.Generator(device="cpu")
        if seed is None:
            g.seed()
        else:
            g.manual_seed(seed)
        w = torch.randn(self.d_sae, self.d_out, generator=g, dtype=torch.float32)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        if self.is_transcoder:
            w = torch.randn(self.d_sae, self.d_in, generator=g, dtype=torch.float32)
            w /= w.norm(dim=1, keepdim=True)
        self.W_enc.copy_(w.T)
        self.b_enc.zero_()
        self.b_dec.zero_()

    @torch.no_grad()
    def tie_encoder_to_decoder(self) -> None:
        """W_enc = W_decᵀ (the recipe's start); a transcoder's encoder reads another space and is left as it is."""
        if not self.is_transcoder:
            self.W_enc.copy_(self.W_dec.T)

    # --- what a batch holds -----------------------------------------------------------------------

    @property
    def batch_width(self) -> int:
        """Columns of a training batch: the input, then (for a transcoder) the target beside it."""
        return self.d_in + self.d_out if self.is_transcoder else self.d_in

    def split_batch(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """(input x [batch, d_in], target [batch, d_out]) of a training batch [batch, batch_width]."""
        if self.is_transcoder:
            return batch[:, : self.d_in], batch[:, self.d_in :]
        return batch, batch

    def model_blocks(self) -> list[slice]:
        """The columns of each model's activations in a crosscoder's input and output (one block otherwise)."""
        width = self.d_out // self.n_models
        return [slice(m * width, (m + 1) * width) for m in range(self.n_models)]

    def decoder_norms(self) -> Tensor:
        """[d_sae] Σ_m ‖W_dec_i^m‖ over the models' blocks: ‖W_dec_i‖ for an SAE or a transcoder."""
        if self.n_models == 1:
            return self.W_dec.norm(dim=1)
        return self.W_dec.view(self.d_sae, self.n_models, -1).norm(dim=2).sum(1)

    @classmethod
    def create(cls, arch: str, d_in: int, n_features: int, **kwargs: Any) -> SAE:
        """Build an SAE by architecture name: "relu", "topk", "batchtopk" or "jumprelu"."""
        from saekit.saes.registry import sae_class

        return sae_class(arch)(d_in, n_features, **kwargs)

    @classmethod
    def hyperparameter_names(cls) -> tuple[str, ...]:
        """The architecture's own keyword arguments to `create` (TopK's k, JumpReLU's bandwidth, ...)."""
        shared = inspect.signature(SAE.__init__).parameters
        own = inspect.signature(cls.__init__).parameters.values()
        return tuple(p.name for p in own if p.kind is p.KEYWORD_ONLY and p.name not in shared)

    @property
    def saved_architecture(self) -> str:
        """The `architecture` its cfg.json gives SAELens: the transcoder's name for a transcoder, where SAELens has
        one (a transcoder without one is saved under the plain name, which SAELens reads as the same map when
        d_out = d_in)."""
        if self.is_transcoder and self.saelens_transcoder_architecture:
            return self.saelens_transcoder_architecture
        return self.saelens_architecture

    def saelens_config(self) -> dict[str, Any]:
        """The keys SAELens's cfg.json needs for this architecture besides the shared ones."""
        return {}

    @classmethod
    def hyperparams_from_saelens(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """The `create` arguments a SAELens cfg.json of this architecture holds."""
        return {}

    # --- the forward maps -------------------------------------------------------------------------

    def pre_acts(self, x: Tensor, out: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """pre = (x − b_dec) W_enc + b_enc: [..., d_in] → [..., d_sae] (into `out` [batch, d_sae] if given;
        the product in `dtype` if given, e.g. bf16 where the hardware multiplies it faster)."""
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        W_enc, b_enc = self.W_enc, self.b_enc
        if dtype is not None and dtype != W_enc.dtype:
            x, W_enc, b_enc = x.to(dtype), W_enc.to(dtype), b_enc.to(dtype)
        if x.ndim == 2:
            return torch.addmm(b_enc, x, W_enc, out=out)  # bias fused into the matmul
        return x @ W_enc + b_enc

    @torch.no_grad()
    def scratch_pre_acts(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """pre_acts of a training batch [batch, d_in] → [batch, d_sae] (in `dtype`, default the SAE's),
        without grad, written into a buffer kept between steps. A fresh [4096, 4096] fp32 block is 64 MiB
        straight from mmap on CPUs, and first touching it costs a page fault per 4 KiB (18k per step: ~10%
        of a TopK step here). The buffer is overwritten by the next call: use the result within the step."""
        dtype = dtype or self.dtype
        out = self.scratch("pre", x.shape[0], dtype)
        if dtype == self.W_enc.dtype:
            return self.pre_acts(x, out=out)
        x_bar = self.encoder_input(x)
        W_enc = self.scratch("W_enc", self.d_in, dtype).copy_(self.W_enc)  # [d_in, d_sae], into kept memory too
        return torch.addmm(self.b_enc.to(dtype), x_bar.to(dtype), W_enc, out=out)

    def scratch(self, name: str, batch: int, dtype: torch.dtype | None = None) -> Tensor:
        """A [batch, d_sae] buffer named `name` (default dtype: the SAE's), kept between training steps
        (see `scratch_pre_acts`)."""
        dtype = dtype or self.dtype
        buffers = self.__dict__.setdefault("_scratch", {})
        buf = buffers.get(name)
        if buf is None or buf.shape != (batch, self.d_sae) or buf.dtype != dtype or buf.device != self.device:
            buf = buffers[name] = torch.empty(batch, self.d_sae, dtype=dtype, device=self.device)
        return buf

    def release_scratch(self) -> None:
        """Free the training buffers (the trainer calls this when a run ends)."""
        self.__dict__.pop("_scratch", None)

    def activate(self, pre: Tensor) -> Tensor:
        """The inference activation σ(pre) → f."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations f: [..., d_in] → [..., d_sae]."""
        return self.activate(self.pre_acts(x))

    @torch.no_grad()
    def sparse_encode(self, x: Tensor, dtype: torch.dtype | None = None) -> tuple[Codes, Tensor]:
        """The codes of x [tokens, d_in] as their active entries and values [nnz] (in the SAE's dtype), with the
        encoder's product in `dtype` (default the SAE's: exactly `encode`'s; bf16 rounds pre by under 0.4 %)."""
        f = self.activate(self.pre_acts(x, dtype=dtype))  # [tokens, d_sae], ≥ 0, in the product's dtype
        codes = positive_codes(f)
        return codes, gather(f, codes).to(self.dtype)

    def decode(self, f: Tensor) -> Tensor:
        """Reconstruction x̂ = f W_dec + b_dec: [..., d_sae] → [..., d_out]."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # --- training ---------------------------------------------------------------------------------

    def train_activate(self, pre: Tensor, ctx: LossContext = PLAIN) -> Tensor:
        """The activation used in training; architectures whose training differs override it."""
        return self.activate(pre)

    def sparsity_loss(self, f: Tensor, pre: Tensor, ctx: LossContext) -> Tensor:
        """The sparsity penalty before its coefficient; zero for architectures that fix L0."""
        return f.new_zeros(())

    def aux_loss(self, target: Tensor, x_hat: Tensor, pre: Tensor, ctx: LossContext) -> Tensor:
        """An auxiliary loss (e.g. AuxK) on the reconstruction target; zero unless the architecture defines one."""
        return target.new_zeros(())

    supports_sparse: ClassVar[bool] = False  # whether `sparse_loss` exists (see saekit.saes.sparse)

    def loss(self, x: Tensor, ctx: LossContext, sparse: bool = False, target: Tensor | None = None) -> SAELoss:
        """Training loss = mse + λ·sparsity + α·auxiliary, with each part returned for logging; the mse is against
        `target` [batch, d_out] (a transcoder's), else against x itself.

        sparse=True computes the same loss and gradients touching only active entries (if supported).
        """
        target = x if target is None else target
        if sparse and self.supports_sparse:
            return self.sparse_loss(x, ctx, target)
        return self.dense_loss(x, ctx, target)

    def dense_loss(self, x: Tensor, ctx: LossContext, target: Tensor) -> SAELoss:
        """The loss through dense products (under autocast when ctx asks for a lower compute dtype);
        architectures may override it with a fused version."""
        if ctx.compute_dtype is None or ctx.compute_dtype == self.dtype:
            return self.reference_loss(x, ctx, target)
        with torch.autocast(self.device.type, dtype=ctx.compute_dtype):
            out = self.reference_loss(x, ctx, target)
        parts = ("total", "mse", "sparsity", "auxiliary", "x_hat")
        return out._replace(**{name: getattr(out, name).to(self.dtype) for name in parts})

    def reference_loss(self, x: Tensor, ctx: LossContext, target: Tensor | None = None) -> SAELoss:
        """The loss written plainly with autograd: the reference every faster path is tested against."""
        target = x if target is None else target
        pre = self.pre_acts(x)
        f = self.train_activate(pre, ctx)
        x_hat = self.decode(f)
        mse = (x_hat - target).pow(2).sum(-1).mean()
        sparsity = self.sparsity_loss(f, pre, ctx)
        aux = self.aux_loss(target, x_hat, pre, ctx)
        total = mse + ctx.sparsity_coefficient * sparsity + ctx.aux_coefficient * aux
        return SAELoss(total, mse, sparsity, aux, x_hat, f=f)

    def sparse_loss(self, x: Tensor, ctx: LossContext, target: Tensor) -> SAELoss:
        """The loss through sparse products; architectures that support it override this."""
        raise NotImplementedError(f"{self.arch} has no sparse training path")

    def selected(self, x: Tensor, codes: Codes, values: Tensor, grad_dtype: torch.dtype | None = None) -> Tensor:
        """Differentiable pre-activations [nnz] at `codes` (values from a no-grad dense encoder pass, in any
        compute dtype: they come back in the SAE's; W_enc's gradient products in `grad_dtype` if given)."""
        b_dec = self.b_dec if self.apply_b_dec_to_input else x.new_zeros(self.d_in)  # a constant: no gradient
        return selected_pre_acts(x, b_dec, self.W_enc, self.b_enc, codes, values.to(self.dtype), grad_dtype)

    def encoder_input(self, x: Tensor) -> Tensor:
        """x̄: the input the encoder multiplies, x − b_dec where the SAE subtracts its pre-encoder bias."""
        return x - self.b_dec if self.apply_b_dec_to_input else x

    def sparse_mse(self, target: Tensor, codes: Codes, f: Tensor,
                   grad_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """(x̂ [batch, d_out], mse against `target`) for activations f [nnz] at `codes` (W_dec's gradient products
        in `grad_dtype`)."""
        x_hat = sparse_decode(codes, f, self.W_dec, self.b_dec, grad_dtype)
        return x_hat, (x_hat - target).pow(2).sum(-1).mean()

    @torch.no_grad()
    def after_step(self, out: SAELoss, batch: BatchReduce = LOCAL) -> None:
        """Hook for state an architecture updates after each optimiser step (e.g. BatchTopK's threshold), from
        statistics of the global batch."""

    @torch.no_grad()
    def set_b_dec_keeping_codes(self, b_dec: Tensor) -> None:
        """Set b_dec [d_in]; where the encoder reads x − b_dec, b_enc moves by (b_dec_new − b_dec) W_enc so that every
        input's codes stay exactly what they were (a decoder refit or fine-tune changes the readout only)."""
        if self.apply_b_dec_to_input:
            self.b_enc += (b_dec - self.b_dec) @ self.W_enc
        self.b_dec.copy_(b_dec)

    # --- decoder norms ----------------------------------------------------------------------------

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale each decoder row to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each (unit) decoder row, so a step moves it on the sphere."""
        if self.W_dec.grad is None:
            return
        g, w = self.W_dec.grad, self.W_dec
        g -= (g * w).sum(dim=1, keepdim=True) * w

    @torch.no_grad()
    def scale_activations(self, factor: float, target_factor: float | None = None) -> None:
        """Make the SAE work on inputs multiplied by `factor` (features scale with them) and reconstruct targets
        multiplied by `target_factor` (default: `factor`; a transcoder's target has a scale of its own).

        Used to fold the trainer's activation normalisation back into the weights: for positively homogeneous
        activations, σ(c·pre) = c·σ(pre), so scaling b_enc (and thresholds) by c and b_dec by t, and W_dec by t / c
        where they differ, turns f(x) W_dec + b_dec into t·(f(x) W_dec + b_dec) for inputs c·x: exact.
        """
        target_factor = factor if target_factor is None else target_factor
        self.b_enc *= factor
        self.b_dec *= target_factor
        if target_factor != factor:
            self.W_dec *= target_factor / factor

    # --- description and persistence --------------------------------------------------------------

    def saelens_tensors(self) -> dict[str, Tensor]:
        """The weights under SAELens's names and shapes."""
        return {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_enc": self.b_enc, "b_dec": self.b_dec}

    @torch.no_grad()
    def load_saelens_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Copy weights given under SAELens's names (shapes already checked by the caller)."""
        for name, param in SAE.saelens_tensors(self).items():
            param.copy_(tensors[name])

    def hyperparams(self) -> dict[str, Any]:
        """Architecture-specific constructor arguments (saved in cfg.json and used to rebuild)."""
        return {}

    def load_hyperparams(self, values: dict[str, Any]) -> None:
        """Set hyperparameters as `hyperparams()` gave them (a checkpoint's, e.g. a bandwidth in training units)."""
        unknown = sorted(set(values) - set(self.hyperparams()))
        if unknown:
            raise ValueError(f"{self.arch} SAEs have no hyperparameters {unknown}; they have "
                             f"{sorted(self.hyperparams())}")
        for name, value in values.items():
            setattr(self, name, value)

    def initial_density(self) -> float:
        """Expected share of (token, feature) entries active before training: all of them, for a plain ReLU."""
        return 1.0

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def save(self, path: str) -> None:
        """Write a SAELens-compatible folder: cfg.json + sae_weights.safetensors."""
        from saekit.formats import save_sae

        save_sae(self, path)

    def extra_repr(self) -> str:
        kind = {**({"d_out": self.d_out} if self.is_transcoder else {}),
                **({"n_models": self.n_models} if self.n_models > 1 else {})}
        extra = ", ".join(f"{k}={v}" for k, v in {**kind, **self.hyperparams()}.items())
        return f"arch={self.arch!r}, d_in={self.d_in}, d_sae={self.d_sae}" + (f", {extra}" if extra else "")
