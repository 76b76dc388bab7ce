"""Configuration of the Styled VAE-VQ tokenizer: one dataclass, presets as data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config_base import ConfigBase

HEADS = ("v1", "v2", "none", "ln", "rms")
ENCODERS = ("transformer", "conv")
DECODERS = ("v1", "v2", "conv")
ENCODER_STEMS = ("none", "conv")
NOISE_TYPES = ("multiplicative", "additive")
ATOM_NORMS = ("linear", "softmax")
ADALN_MODES = ("plain", "zero")
TOKEN_DROPOUTS = ("none", "nested", "tail")
TARGETS = ("pixels", "spatial_vq")
CONV_READS = ("own", "prefix")
CONV_INPUTS = ("const", "first", "all")


@dataclass
class SVQConfig(ConfigBase):
    """Every number of the tokenizer. The defaults are the reference `base` model.

    Token count, conditions per block, bottleneck width, widths and depths are all fields;
    only `num_tokens == decoder_cond_layers * conds_per_block` ties them together.
    """

    model_type: str = "svq"  # written to config.json so a foreign config fails loudly
    # --- input
    image_size: int = 256  # square input side, pixels
    patch_size: int = 16  # encoder patchify stride and decoder unpatchify size
    in_channels: int = 3
    # --- tokens
    num_tokens: int = 36  # learned queries = attribute tokens per image
    token_dim: int = 128  # E: the bottleneck width (64 or 128 in the reference)
    # --- encoder trunk
    encoder: str = "transformer"  # transformer: queries over patches (the reference); conv: the
    # conv stem (stem_channels) to a small map, flattened, then one Linear to all N x E features
    # at once (every token sees the whole map; the transformer fields below are then unused)
    encoder_width: int = 1024
    encoder_heads: int = 16
    encoder_mlp_ratio: float = 4.0
    encoder_dense_layers: int = 18  # plain pre-LN blocks
    encoder_expert_layers: int = 6  # blocks where each query has its own MLP
    causal_queries: bool = False  # query i sees patches and queries <= i; patches never see queries
    # --- encoder stem: "conv" puts downsampling residual conv stages before the patchify conv,
    # which then takes the stem's map (patch_size / 2**(len(stem_channels) - 1) per side) to the
    # same grid; the transformer, its queries and experts are unchanged
    encoder_stem: str = "none"  # none: patchify the pixels (the reference); conv: stem first
    stem_channels: list[int] | None = None  # conv: widths, full resolution first; each next
    # entry halves the side (a stride-2 4x4 conv); multiples of 8 (GroupNorm(8, C))
    stem_blocks: int = 1  # conv: residual blocks after each stride-2 conv
    # --- encoder head (the bottleneck)
    head: str = "v2"  # v1: L2-normalise; v2: cosine soft quantiser + LN; none: linear only;
    # ln: LayerNorm without affine (each token zero-mean, unit-variance: additive noise c then
    # sets the signal-to-noise ratio, 1 / c**2, whatever the encoder does); rms: each picture's
    # N x E features scaled to unit root mean square (the same ratio on average, the energy
    # shared between tokens as the encoder likes; 1 degree of freedom lost, not 2 per token)
    num_atoms: int | None = None  # v2 atom count; None means token_dim (the reference)
    atom_norm: str = "linear"  # v2: sim / sum(sim) ("linear", reference) or softmax(sim / T)
    atom_temperature: float = 1.0  # v2 softmax temperature
    noise_scale: float = 0.0  # training-only noise on the features (c in mu + c*|mu|*eps)
    noise_type: str = "multiplicative"  # multiplicative: c*|mu|*eps; additive: c*eps
    # --- token dropout (training only): any prefix of the tokens learns to decode
    token_dropout: str = "none"  # nested: kept length ~ uniform; tail: dropped ~ geometric
    token_dropout_prob: float = 0.0  # fraction of images in a batch whose tail is dropped
    token_dropout_min_keep: int = 1  # never keep fewer than this many leading tokens
    # --- decoder
    decoder: str = "v2"  # v1: 36 placeholder slots; v2: conditions prepended, sequence grows;
    # conv: StyleGAN-like synthesis from a 4x4 constant, one FiLM residual block per conditioned
    # layer, coarse to fine (uses decoder_channels, decoder_cond_layers, conds_per_block; the
    # transformer and pixel head fields below are then unused)
    decoder_width: int = 768  # D
    decoder_heads: int = 12  # D / 64 in the reference
    decoder_mlp_ratio: float = 4.0
    decoder_cond_layers: int = 18  # conditioned blocks
    conds_per_block: int = 2  # block l takes conditions l*k .. l*k+k-1
    decoder_plain_layers: int = 6
    adaln: str = "plain"  # plain: a*LN(x)+b (reference); zero: (1+a)*LN(x)+b with zero-init gate
    cond_proj: bool = True  # per-block Linear(D, D) on that block's conditions (see layers.py)
    decoder_channels: list[int] | None = None  # conv: widths at 4x4, 8x8, ... image_size
    # (log2(image_size / 4) + 1 entries, multiples of 8); the decoder_cond_layers blocks are
    # split over them as evenly as possible, coarser resolutions taking the remainder
    conv_reads: str = "own"  # conv: which tokens block l's FiLM reads. own: its group only,
    # tokens l*k .. l*k+k-1 (w+ style); prefix: every token up to its group's end, 0 .. l*k+k-1
    # (the first tokens then reach every resolution, the finest included)
    conv_input: str = "const"  # conv: the 4x4 map synthesis starts from. const: a learned
    # constant (StyleGAN); first: the constant + a zero-initialised Linear of the first group's
    # tokens (0 .. k-1) to the map, so the first tokens place things; all: of every token
    conv_input_levels: int = 1  # conv, conv_input not const: how many resolutions, from 4x4
    # up, get such a token-made map (added after the upsample at 8x8, 16x16, ...), so the tokens
    # can say where at finer resolutions too; 1: the 4x4 start map only
    conv_skip: bool = False  # conv: StyleGAN2 "skip" output, a 1x1 conv to pixels at every
    # coarser resolution, upsampled (bilinear) and summed into the finest one's
    refiner_channels: int = 32  # pixel head conv refiner width
    refiner_kernel: int = 17  # first refiner conv kernel (odd)
    pixel_skip: bool = False  # refiner output adds to the unpatchified image (see PixelHead)
    # --- decoder target: pixels, or the logits of a spatial VQ tokenizer's grid (docs/design.md §3)
    target: str = "pixels"  # "spatial_vq": a code head, logits (B, h*w, K) in one pass
    spatial_grid_size: int | None = None  # spatial_vq: side h = w of its grid, a multiple of
    # the decoder's grid (image_size / patch_size)
    spatial_codebook_size: int | None = None  # spatial_vq: K, the classes of every position
    # --- training-time memory
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        need = self.require
        need(self.model_type == "svq", f"model_type is {self.model_type!r}, expected 'svq'")
        for name in (
            "image_size", "patch_size", "in_channels", "num_tokens", "token_dim",
            "encoder_width", "encoder_heads", "decoder_width", "decoder_heads",
            "decoder_cond_layers", "conds_per_block", "refiner_channels", "refiner_kernel",
        ):  # fmt: skip
            value = getattr(self, name)
            need(
                isinstance(value, int) and value > 0,
                f"{name} must be a positive int, got {value!r}",
            )
        for name in (
            "encoder_dense_layers", "encoder_expert_layers", "decoder_plain_layers", "stem_blocks"
        ):  # fmt: skip
            value = getattr(self, name)
            need(
                isinstance(value, int) and value >= 0, f"{name} must be an int >= 0, got {value!r}"
            )
        need(
            self.encoder_dense_layers + self.encoder_expert_layers > 0,
            "the encoder needs at least one block",
        )
        need(
            self.image_size % self.patch_size == 0,
            f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}",
        )
        need(
            self.encoder_width % self.encoder_heads == 0,
            f"encoder_width {self.encoder_width} is not divisible by encoder_heads "
            f"{self.encoder_heads}",
        )
        need(
            self.decoder_width % self.decoder_heads == 0,
            f"decoder_width {self.decoder_width} is not divisible by decoder_heads "
            f"{self.decoder_heads}",
        )
        need(
            self.num_tokens == self.decoder_cond_layers * self.conds_per_block,
            f"num_tokens {self.num_tokens} != decoder_cond_layers {self.decoder_cond_layers} x "
            f"conds_per_block {self.conds_per_block}: every token must condition one block",
        )
        need(self.encoder_mlp_ratio > 0 and self.decoder_mlp_ratio > 0, "mlp ratios must be > 0")
        need(self.encoder in ENCODERS, f"encoder {self.encoder!r} is not one of {ENCODERS}")
        need(self.head in HEADS, f"head {self.head!r} is not one of {HEADS}")
        need(self.decoder in DECODERS, f"decoder {self.decoder!r} is not one of {DECODERS}")
        need(self.noise_type in NOISE_TYPES, f"noise_type {self.noise_type!r} not in {NOISE_TYPES}")
        need(self.noise_scale >= 0, f"noise_scale must be >= 0, got {self.noise_scale}")
        need(self.atom_norm in ATOM_NORMS, f"atom_norm {self.atom_norm!r} not in {ATOM_NORMS}")
        need(
            self.atom_temperature > 0, f"atom_temperature must be > 0, got {self.atom_temperature}"
        )
        need(
            self.num_atoms is None or (isinstance(self.num_atoms, int) and self.num_atoms > 0),
            f"num_atoms must be None or a positive int, got {self.num_atoms!r}",
        )
        need(self.adaln in ADALN_MODES, f"adaln {self.adaln!r} is not one of {ADALN_MODES}")
        need(
            self.token_dropout in TOKEN_DROPOUTS,
            f"token_dropout {self.token_dropout!r} is not one of {TOKEN_DROPOUTS}",
        )
        need(
            0.0 <= self.token_dropout_prob <= 1.0,
            f"token_dropout_prob must be in [0, 1], got {self.token_dropout_prob}",
        )
        need(
            1 <= self.token_dropout_min_keep <= self.num_tokens,
            f"token_dropout_min_keep must be in [1, {self.num_tokens}], "
            f"got {self.token_dropout_min_keep}",
        )
        need(self.refiner_kernel % 2 == 1, f"refiner_kernel must be odd, got {self.refiner_kernel}")
        need(self.target in TARGETS, f"target {self.target!r} is not one of {TARGETS}")
        spatial = {"spatial_grid_size": self.spatial_grid_size,
                   "spatial_codebook_size": self.spatial_codebook_size}  # fmt: skip
        if self.target == "pixels":
            set_ = [k for k, v in spatial.items() if v is not None]
            need(not set_, f"{set_} are for target 'spatial_vq', but target is 'pixels'")
        else:
            for name, value in spatial.items():
                need(
                    isinstance(value, int) and not isinstance(value, bool) and value > 0,
                    f"target 'spatial_vq' needs {name} as a positive int, got {value!r}",
                )
            need(
                self.spatial_grid_size % self.grid_size == 0,
                f"spatial_grid_size {self.spatial_grid_size} is not a multiple of the decoder's "
                f"grid {self.grid_size} (image_size / patch_size)",
            )
        self._check_conv_options()
        need(
            self.refiner_channels % 8 == 0,
            f"refiner_channels must be a multiple of 8 (GroupNorm(8, C)), got "
            f"{self.refiner_channels}",
        )

    def _check_conv_options(self) -> None:
        """The conv stem and the conv decoder: their channel plans exist exactly when they are
        on, and fit the image and the grid."""
        need = self.require
        need(
            self.encoder_stem in ENCODER_STEMS,
            f"encoder_stem {self.encoder_stem!r} is not one of {ENCODER_STEMS}",
        )
        need(
            self.encoder == "transformer" or self.encoder_stem == "none",
            "encoder 'conv' is itself a conv stem (stem_channels); encoder_stem must be 'none'",
        )
        conv_encoder = self.encoder == "conv"
        plans = {"stem_channels": self.encoder_stem == "conv" or conv_encoder,
                 "decoder_channels": self.decoder == "conv"}  # fmt: skip
        for name, on in plans.items():
            value = getattr(self, name)
            if not on:
                need(value is None, f"{name} {value!r} is set, but its option is off")
                continue
            need(
                isinstance(value, list | tuple) and len(value) > 0
                and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 and c % 8 == 0
                        for c in value),
                f"{name} must be a non-empty list of positive multiples of 8 (GroupNorm(8, C)), "
                f"got {value!r}",
            )  # fmt: skip
            setattr(self, name, list(value))  # a tuple would not survive config.json unchanged
        if conv_encoder:
            need(
                self.image_size % self.stem_factor == 0,
                f"stem_channels {self.stem_channels} halve the side {len(self.stem_channels) - 1} "
                f"times (/{self.stem_factor}), which does not divide image_size {self.image_size}",
            )
        if self.encoder_stem == "conv":
            need(
                self.patch_size % self.stem_factor == 0,
                f"stem_channels {self.stem_channels} halve the side {len(self.stem_channels) - 1} "
                f"times (/{self.stem_factor}), which does not divide patch_size {self.patch_size}",
            )
        need(self.conv_reads in CONV_READS, f"conv_reads {self.conv_reads!r} not in {CONV_READS}")
        need(
            self.decoder == "conv" or self.conv_reads == "own",
            f"conv_reads {self.conv_reads!r} is for decoder 'conv', not {self.decoder!r}",
        )
        need(self.conv_input in CONV_INPUTS, f"conv_input {self.conv_input!r} not in {CONV_INPUTS}")
        need(
            self.decoder == "conv" or self.conv_input == "const",
            f"conv_input {self.conv_input!r} is for decoder 'conv', not {self.decoder!r}",
        )
        need(
            isinstance(self.conv_input_levels, int) and self.conv_input_levels >= 1,
            f"conv_input_levels must be an int >= 1, got {self.conv_input_levels!r}",
        )
        need(
            self.conv_input_levels == 1 or self.conv_input != "const",
            f"conv_input_levels {self.conv_input_levels} needs conv_input 'first' or 'all'",
        )
        need(
            self.decoder == "conv" or not self.conv_skip,
            f"conv_skip is for decoder 'conv', not {self.decoder!r}",
        )
        if self.decoder == "conv":
            levels = len(self.decoder_channels)
            need(
                self.image_size == 4 * 2 ** (levels - 1),
                f"decoder_channels {self.decoder_channels} give {levels} resolutions, 4x4 to "
                f"{4 * 2 ** (levels - 1)}px, but image_size is {self.image_size}",
            )
            need(
                self.conv_input_levels <= levels,
                f"conv_input_levels {self.conv_input_levels} exceeds the decoder's {levels} "
                "resolutions",
            )
            need(
                self.decoder_cond_layers >= levels,
                f"decoder_cond_layers {self.decoder_cond_layers} is fewer than the {levels} "
                f"resolutions of decoder_channels: each needs a block",
            )
            need(
                self.target == "pixels",
                f"decoder 'conv' paints pixels; target {self.target!r} needs decoder v1 or v2",
            )

    # --- derived sizes (not fields: never out of sync)
    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def stem_factor(self) -> int:
        """How many pixels per side one cell of the conv stem's output covers (1 without it)."""
        conv = self.encoder_stem == "conv" or self.encoder == "conv"
        return 2 ** (len(self.stem_channels) - 1) if conv else 1

    @property
    def decoder_level_blocks(self) -> list[int]:
        """Conv decoder: FiLM blocks at 4x4, 8x8, ... image_size; decoder_cond_layers split as
        evenly as possible, the coarser resolutions (the cheaper ones) taking the remainder."""
        levels = len(self.decoder_channels)
        share, extra = divmod(self.decoder_cond_layers, levels)
        return [share + (i < extra) for i in range(levels)]

    @property
    def atoms(self) -> int:
        return self.num_atoms if self.num_atoms is not None else self.token_dim


# The `conv32` preset (see PRESETS), which the other conv presets start from.
CONV32: dict[str, Any] = {
    "image_size": 32,
    "patch_size": 8,
    "token_dim": 16,
    "encoder": "conv",
    "stem_channels": [16, 32, 64, 128],
    "stem_blocks": 0,
    "head": "ln",
    "noise_type": "additive",
    "decoder": "conv",
    "decoder_channels": [128, 64, 32, 16],
    "decoder_cond_layers": 9,
    "conds_per_block": 4,
}

# conv32's design at 64 px: one more stride-2 stage (64 -> 4, widths 16-32-64-128-128),
# 36 x 32 features, 9 FiLM blocks of 4 tokens over five resolutions (2-2-2-2-1, widths
# 128-128-64-32-16).
CONV64: dict[str, Any] = {
    **CONV32,
    "image_size": 64,
    "token_dim": 32,
    "stem_channels": [16, 32, 64, 128, 128],
    "decoder_channels": [128, 128, 64, 32, 16],
}
# What makes a conv preset order its tokens (the `-ordered` presets): every FiLM block reads
# all tokens up to its own, a fifth of the training pictures keep only a uniform-length prefix
# (nested token dropout), additive noise 0.3 on the unit-variance features.
ORDERED: dict[str, Any] = {
    "noise_scale": 0.3,
    "token_dropout": "nested",
    "token_dropout_prob": 0.2,
    "conv_reads": "prefix",
}

PRESETS: dict[str, dict[str, Any]] = {
    # The reference model (seed 000, "modelV2"): 2.12B encoder, 224M decoder.
    "base": {},
    # The reference's first generation: L2-normalised head with multiplicative noise, slot decoder.
    "base-v1": {"head": "v1", "decoder": "v1", "noise_scale": 0.0005},
    # What the CPU demo trains at 64px (svq/configs/stage1_world64.yaml). Re-measured for
    # stage 1 on the shared 2-core machine (docs/RESULTS_stage1.md): with other jobs running,
    # one training process gets a fraction of a core, and the former small (encoder width 256,
    # 4 dense + 2 expert blocks, decoder width 128 with MLP 4x, 5.6 GFLOP/image forward +
    # backward) trained at ~1.3 img/s, too slow to learn in a 25-minute run. This one keeps
    # the geometry that decides token usage — patch 8, 36 tokens x 64, the reference's v2
    # decoder with 18 blocks x 2 prepended conditions (packing 6 per block left 30 of 36 tokens
    # dead, docs/design.md §11), pixel_skip — and shrinks widths: encoder 128 (2 dense + 2 expert
    # blocks), decoder 96 with MLP 2x, refiner 16 channels: 1.5 GFLOP/image, ~3.5x the speed.
    # noise_scale 0.5 (multiplicative, training only; the reference used 1 down to 0.0005 as
    # its data grew): in 200-step calibration runs at lr 1e-3, noise 0.3 left PSNR unchanged
    # (14.70 vs 14.71 dB) but spread the information into the late tokens (swapping tokens
    # 24-35 with another image's cost 0.93 dB instead of 0.40, tokens 24-29 0.33 instead of
    # 0.07): a noisy token carries less, so the decoder needs all 36. The 900-step
    # stage1_world64 run then ended with every block of 6 tokens carrying information, at a
    # still blurry 15.6 dB (14,400 images seen).
    "small": {
        "image_size": 64,
        "patch_size": 8,
        "token_dim": 64,
        "noise_scale": 0.5,
        "encoder_width": 128,
        "encoder_heads": 2,
        "encoder_dense_layers": 2,
        "encoder_expert_layers": 2,
        "decoder_width": 96,
        "decoder_heads": 2,
        "decoder_mlp_ratio": 2.0,
        "decoder_plain_layers": 2,
        "cond_proj": False,
        "refiner_channels": 16,
        "refiner_kernel": 9,
        "pixel_skip": True,
    },
    # Unit tests and the quick demo: a few milliseconds a forward pass. `pixel_skip` (also in
    # `small`): on the demo's pictures, 300 steps reached 16.6 dB with it and 11.8 dB without.
    "tiny": {
        "image_size": 32,
        "patch_size": 8,
        "token_dim": 16,
        "encoder_width": 32,
        "encoder_heads": 2,
        "encoder_dense_layers": 1,
        "encoder_expert_layers": 1,
        "decoder_width": 32,
        "decoder_heads": 2,
        "decoder_plain_layers": 1,
        "cond_proj": False,
        "refiner_channels": 8,
        "refiner_kernel": 3,
        "pixel_skip": True,
    },
    # `tiny` with the conv stem and the conv decoder (decoder_channels 64 at 4x4 down to 16 at
    # 32x32, 3 FiLM blocks per resolution reading 3 tokens each, coarse to fine). The plan was
    # chosen for step time: at batch 32 on one thread a training step cost 1.7x and 1.9x tiny's
    # in two runs on the shared 2-core machine, where the first conv prototype's widths (stem
    # 32-128, decoder 128-96-64-32) cost 4.1x (benchmarks/tokenizer_step_time.py).
    "tiny-conv": {
        "image_size": 32,
        "patch_size": 8,
        "token_dim": 16,
        "encoder_stem": "conv",
        "stem_channels": [16, 32, 64, 64],
        "stem_blocks": 1,
        "encoder_width": 32,
        "encoder_heads": 2,
        "encoder_dense_layers": 1,
        "encoder_expert_layers": 1,
        "decoder": "conv",
        "decoder_channels": [64, 64, 32, 16],
        "decoder_cond_layers": 12,
        "conds_per_block": 3,
    },
    # The conv encoder and the conv decoder at 32 px (the quick demo): the stem halves 32 -> 4
    # with widths 16-32-64-128 and no residual blocks, one Linear maps the 4x4x128 map to all
    # 36 x 16 features, LayerNorm per token; 9 FiLM blocks of 4 tokens each, 3 at 4x4 then 2
    # per resolution, widths 128-64-32-16. In the side-by-side at batch 32 (benchmarks/
    # tokenizer_side_by_side.py, docs/RESULTS_stage1.md) it learns far faster than `tiny` for
    # ~1.8x its step time.
    "conv32": CONV32,
    # conv32 made to order its tokens, the quick demo's tokenizer: every FiLM block reads all
    # tokens up to its own (conv_reads "prefix"), a fifth of the training pictures keep only a
    # uniform-length prefix (nested token dropout), additive noise 0.3 on the unit-variance
    # features (stage 1 ramps it in). In experiments/tokenizer_ablation.py at 1,500 steps with
    # the attribute loss: 21.38 dB continuous, 20.15 from per-position ids (K = 256, before any
    # fine-tune), and the first 6 tokens alone decode place and season at 99% / 96% (judge),
    # against 21.69 / 20.65 dB and 72% / 25% for conv32 with the same loss and noise
    # (docs/RESULTS_stage1.md).
    "conv32-ordered": {**CONV32, **ORDERED},
    # conv32-ordered whose decoder starts from a 4x4 map made from every token (conv_input
    # "all": FiLM alone cannot say where the figure stands) and 8-dim tokens (256 codes per
    # position quantise 8 dims far better than 16). At 1,500 steps with the attribute loss:
    # 21.85 dB continuous, 21.17 from per-position ids (K = 256, before any fine-tune; gap
    # 0.68 dB), scene from the ids 98%, the first 6 tokens place / season 97% / 93%, every
    # 6-token block worth >= 0.59 dB (conv32-ordered: 21.38 / 20.15, 1.23 dB gap, its last
    # blocks ~0.06 dB), for 0.94x its step (docs/RESULTS_stage1.md).
    "conv32-map": {**CONV32, **ORDERED, "conv_input": "all", "token_dim": 8},
    "conv64": CONV64,
    # conv64 made to order its tokens as conv32-ordered (the standard demo's tokenizer before
    # conv64-map). At 2,400 steps x 16 with the attribute loss: 19.11 dB continuous, 17.91 from
    # per-position ids (K = 256, before any fine-tune); the first 6 tokens decode place and
    # season at 100% / 95% (docs/RESULTS_stage1.md).
    "conv64-ordered": {**CONV64, **ORDERED},
    # conv64-ordered with conv32-map's two changes at 64 px: the 4x4 start map from every token
    # and 8-dim tokens. At 2,400 steps x 16 with the attribute loss: 19.70 dB continuous, 19.29
    # from per-position ids (K = 256, before any fine-tune; gap 0.41 dB), the scene from the ids
    # 99%, the character 69%, every 6-token block >= 0.40 dB, against conv64-ordered's 19.11 /
    # 17.91, 88%, 64% and 0.03 dB; with 16-dim tokens 19.98 / 18.83, with 32 19.97 / 18.22
    # (docs/RESULTS_stage1.md). The standard demo's tokenizer (with the person's attributes
    # asked of tokens 6-11: 19.97 dB from the ids at 3,900 bf16 steps, the person 86%; in the
    # standard demo at 8,000 bf16 steps 21.25 dB and every attribute >= 92% from the ids).
    "conv64-map": {**CONV64, **ORDERED, "conv_input": "all", "token_dim": 8},
}
SVQConfig.presets = PRESETS
