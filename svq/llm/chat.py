"""`SVQChat`: one object that holds the image-speaking LLM and everything around it — the LLM
and its tokenizer (extended with the image vocabulary), the svq tokenizer with its codebook,
the understanding projector, the VQ head and the spatial VQ decoder — with `chat`, a training
`forward`, and `save_pretrained` / `from_pretrained` of the whole folder:

    svq_chat.json           SVQChatConfig (mode, vocabulary ids, LoRA options, image route)
    llm/                    the LLM (`save_pretrained`; in LoRA mode the un-adapted, resized
                            base) and its tokenizer
    adapter/                LoRA mode: the peft adapter (LoRA matrices + trained new rows)
    svq/                    StyledVAEVQ (config.json, model.safetensors, codebook.safetensors)
    projector/              ImageProjector
    vq_head/, spatial_vq/   VQHead and SpatialVQ, when there is a spatial decoder
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from svq.codebook import Codebook
from svq.config_base import ConfigBase
from svq.data import Preprocess, load_image, load_image_file
from svq.images import to_uint8
from svq.model import StyledVAEVQ
from svq.spatial_vq import SpatialVQ

from .conversation import (
    ConversationBatch,
    collate,
    encode_conversation,
    resolve_images,
    split_reply,
)
from .embeddings import extend_llm
from .guidance import ImageGuidance
from .loading import load_llm, load_tokenizer
from .logits import (
    ImageSpanLogitsProcessor,
    ImageSpanSampler,
    PinnedCodes,
    span_cross_entropy,
)
from .lora import BaseWeights, LoraOptions, apply_lora, load_adapter, save_adapter
from .projector import ImageProjector, ProjectorConfig, inject_image_embeds
from .soft_targets import neighbour_targets, soft_code_cross_entropy
from .vocabulary import ImageVocabulary
from .vq_head import VQHead, VQHeadConfig

CONFIG_NAME = "svq_chat.json"
MODES = ("full", "lora")
IMAGE_DECODERS = ("vq_head", "svq", "spatial")  # how a generated image becomes pixels
# What the LLM writes for a picture: "svq" (36 codebook ids) or "spatial" (the spatial VQ's
# h*w ids in sequence: the serial baseline of issue 9, decoded by the spatial VQ itself).
IMAGE_TOKENIZERS = ("svq", "spatial")


@dataclass
class SVQChatConfig(ConfigBase):
    """What `svq_chat.json` holds; the parts keep their own configs in their folders."""

    vocabulary: dict[str, Any]  # ImageVocabulary.to_dict(): where the image tokens are
    model_type: str = "svq_chat"
    mode: str = "full"  # "full": every LLM weight trains; "lora": peft adapter + new rows
    lora: dict[str, Any] | None = None  # LoraOptions.to_dict() in LoRA mode
    image_decoder: str = "vq_head"  # default route: VQ head + spatial decoder, or "svq"
    lm_loss_weight: float = 1.0  # `forward`'s loss = lm_loss_weight * LM + vq_loss_weight * VQ
    vq_loss_weight: float = 1.0
    # weight of the image-span tokens (<boi>, codes, <eoi>) against text tokens (1) inside the
    # LM cross-entropy, a weighted mean; 1: the plain mean over every labelled token
    image_token_loss_weight: float = 1.0
    # the LM cross-entropy over the tokens generation allows at each position only (a code
    # against its position's codes, text against text: `span_cross_entropy`); False: over the
    # whole vocabulary
    constrained_lm_loss: bool = False
    # the codes at span positions >= image_prefix_tokens weigh image_suffix_loss_weight times
    # the image-span weight (ordered ids say the scene first); 1: every code alike
    image_prefix_tokens: int = 6
    image_suffix_loss_weight: float = 1.0
    # > 0: a code's label spread over its codebook neighbours at this temperature
    # (svq.llm.soft_targets; svq route only); 0: one-hot
    code_target_temperature: float = 0.0
    # classifier-free guidance of the codes `generate` writes by default (svq.llm.guidance;
    # its unconditional branch is learned from bare pictures); 1: none
    image_guidance: float = 1.0
    image_tokenizer: str = "svq"  # what the LLM writes: svq ids, or spatial ids (baseline)

    def __post_init__(self) -> None:
        need = self.require
        need(self.model_type == "svq_chat", f"model_type is {self.model_type!r}")
        need(self.mode in MODES, f"mode {self.mode!r} is not one of {MODES}")
        need(
            (self.mode == "lora") == (self.lora is not None),
            "lora options go with mode 'lora', and only with it",
        )
        need(
            self.image_decoder in IMAGE_DECODERS,
            f"image_decoder {self.image_decoder!r} is not one of {IMAGE_DECODERS}",
        )
        need(self.image_prefix_tokens >= 0, "image_prefix_tokens must be >= 0")
        for name in (
            "lm_loss_weight", "vq_loss_weight", "image_token_loss_weight",
            "image_suffix_loss_weight", "code_target_temperature",
        ):  # fmt: skip
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.image_guidance > 0, f"image_guidance must be > 0, got {self.image_guidance}")
        need(
            self.code_target_temperature == 0 or self.image_tokenizer == "svq",
            "code_target_temperature spreads svq codes over their codebook: the svq route's",
        )
        need(
            self.image_tokenizer in IMAGE_TOKENIZERS,
            f"image_tokenizer {self.image_tokenizer!r} is not one of {IMAGE_TOKENIZERS}",
        )
        need(
            (self.image_tokenizer == "spatial") == (self.image_decoder == "spatial"),
            "spatial ids are decoded by the spatial route, and only they are",
        )
        ImageVocabulary.from_dict(self.vocabulary)  # validates


@dataclass
class SVQChatOutput:
    """What `SVQChat.forward` returns."""

    loss: torch.Tensor  # () lm_loss_weight * lm_loss + vq_loss_weight * vq_loss (the config's)
    lm_loss: torch.Tensor  # () next-token cross-entropy over the labelled (assistant) tokens,
    # image-span tokens weighted by the config's image_token_loss_weight
    vq_loss: torch.Tensor | None  # () VQ head cross-entropy; None without targets or head
    logits: torch.Tensor | None  # (B, T, V); None with forward(..., full_logits=False)
    extra_lm_loss: torch.Tensor | None = None  # () forward(..., extra=B2)'s LM loss on B2


class SVQChat(nn.Module):
    """An LLM that reads and writes pictures in a chat. Build one with `build` (from an LLM and
    an svq tokenizer) or `from_pretrained` (a saved folder)."""

    def __init__(
        self,
        llm: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        config: SVQChatConfig,
        svq: StyledVAEVQ,
        projector: ImageProjector,
        vq_head: VQHead | None = None,
        spatial: SpatialVQ | None = None,
    ):
        super().__init__()
        if svq.codebook is None:
            raise ValueError("SVQChat needs the svq tokenizer with its codebook attached")
        if config.image_decoder == "vq_head" and (vq_head is None or spatial is None):
            raise ValueError("image_decoder 'vq_head' needs a VQ head and a spatial VQ")
        if config.image_tokenizer == "spatial" and spatial is None:
            raise ValueError("image_tokenizer 'spatial' needs a spatial VQ")
        self.llm = llm
        self.tokenizer = tokenizer
        self.config = config
        self.vocab = ImageVocabulary.from_dict(config.vocabulary)
        self.svq = svq.requires_grad_(False).eval()  # frozen: the LLM layer learns around it
        self.projector = projector
        self.vq_head = vq_head
        self.spatial = spatial.requires_grad_(False).eval() if spatial is not None else None
        self._base: BaseWeights | None = None  # LoRA mode: the un-adapted weights
        self._code_targets: tuple[float, torch.Tensor] | None = None  # (T, its soft targets)

    # --- construction
    @classmethod
    def build(
        cls,
        llm: PreTrainedModel | str,
        svq: StyledVAEVQ,
        spatial: SpatialVQ | None = None,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        codebook: Codebook | None = None,
        init: str = "projection",
        lora: LoraOptions | None = None,
        projector: dict[str, Any] | None = None,
        vq_head: dict[str, Any] | None = None,
        image_decoder: str | None = None,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
        image_tokenizer: str = "svq",
    ) -> SVQChat:
        """Extend an LLM with the image language and attach the new parts.

        llm: a causal LM, or a local path / hub id for `AutoModelForCausalLM` (its tokenizer
            is loaded from the same place). Its tokenizer must have a chat template.
        svq: the svq tokenizer; `codebook` (default: the one attached to it) gives the image
            tokens and, with init="projection", their initial embeddings (see `embeddings`).
        spatial: the spatial VQ whose grid the VQ head predicts; without it, generated images
            are decoded by the svq decoder only.
        lora: LoRA options: wrap the LLM with peft (else full fine-tuning).
        projector / vq_head: overrides of ProjectorConfig / VQHeadConfig fields.
        image_tokenizer: "spatial" builds the serial baseline: the image tokens are the
            spatial VQ's codes (h*w per picture, rows initialised from its code vectors), no
            VQ head, pictures decoded by the spatial VQ; understanding is unchanged.
        """
        if isinstance(llm, str | Path):
            tokenizer = tokenizer or load_tokenizer(llm)
            llm = load_llm(llm)
        if tokenizer is None:
            raise ValueError("SVQChat.build: pass the LLM's tokenizer")
        if not tokenizer.chat_template:
            raise ValueError(
                "the tokenizer has no chat template; set one (e.g. svq.llm.tiny.QWEN_CHAT_TEMPLATE)"
            )
        codebook = codebook if codebook is not None else svq.codebook
        if codebook is None:
            raise ValueError("SVQChat.build: the svq tokenizer has no codebook; pass one")
        svq.attach_codebook(codebook)  # checks it fits the tokenizer
        if image_tokenizer not in IMAGE_TOKENIZERS:
            raise ValueError(
                f"image_tokenizer {image_tokenizer!r} is not one of {IMAGE_TOKENIZERS}"
            )
        serial = image_tokenizer == "spatial"
        if serial and spatial is None:
            raise ValueError("image_tokenizer 'spatial' needs a spatial VQ")
        n = spatial.num_tokens if serial else svq.config.num_tokens
        vocab = extend_llm(
            llm,
            tokenizer,
            spatial.quantizer.codes() if serial else codebook.codes,
            n,
            init,
            seed=seed,
            pad_to_multiple_of=pad_to_multiple_of,
        )
        width = llm.get_input_embeddings().weight.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head_config = ProjectorConfig(
                in_dim=svq.config.token_dim,
                out_dim=width,
                num_tokens=svq.config.num_tokens,
                **(projector or {}),
            )
            proj = ImageProjector(head_config)
            head = None
            if spatial is not None and not serial:
                head = VQHead(
                    VQHeadConfig(
                        llm_hidden=width,
                        num_inputs=n,
                        grid_size=spatial.grid_size,
                        codebook_size=spatial.codebook_size,
                        **(vq_head or {}),
                    )
                )
        route = image_decoder or ("vq_head" if spatial is not None else "svq")
        route = "spatial" if serial else route
        config = SVQChatConfig(
            vocabulary=vocab.to_dict(), image_decoder=route, image_tokenizer=image_tokenizer
        )
        chat = cls(llm, tokenizer, config, svq, proj, head, spatial)
        if lora is not None:
            chat.enable_lora(lora)
        return chat

    def enable_lora(self, options: LoraOptions | None = None) -> None:
        """Switch to LoRA training: wrap the LLM with peft (adapter + trainable new rows)."""
        if self.config.mode == "lora":
            raise ValueError("LoRA is already enabled")
        options = options or LoraOptions()
        self._base = BaseWeights(self.llm)
        self.llm = apply_lora(self.llm, self.vocab, options)
        self.config.mode, self.config.lora = "lora", options.to_dict()

    def merge_lora(self) -> None:
        """Fold the adapter (and trained rows) into the LLM's weights; back to full mode."""
        if self.config.mode != "lora":
            raise ValueError("merge_lora: LoRA is not enabled")
        self.llm = self.llm.merge_and_unload()
        self._base = None
        self.config.mode, self.config.lora = "full", None

    def train(self, mode: bool = True) -> SVQChat:
        """Train mode for the LLM, projector and VQ head; the svq and spatial tokenizers stay
        in eval mode (no feature noise or token dropout when they encode pictures)."""
        super().train(mode)
        self.svq.eval()
        if self.spatial is not None:
            self.spatial.eval()
        return self

    # --- pictures in, pictures out
    @property
    def device(self) -> torch.device:
        return self.projector.mlp[0].weight.device

    @property
    def pad_token_id(self) -> int:
        """What batches are padded with: the tokenizer's pad token, else its end of text."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def _pixels(self, part: dict[str, Any], size: int) -> torch.Tensor:
        """(1, 3, size, size) in [-1, 1] from a part's "image" (PIL or path), "path" or "url"."""
        source = next((part[k] for k in ("image", "path", "url") if part.get(k) is not None), None)
        if source is None:
            raise ValueError(f"image part without a picture, features or ids: {sorted(part)}")
        if isinstance(source, str | Path):
            image = load_image_file(source, size)  # errors name the file
        else:
            image = load_image(source, size)
        return Preprocess(size)(image).unsqueeze(0).to(self.device)

    @torch.no_grad()
    def prepare(
        self, messages: Sequence[dict[str, Any]], vq_targets: bool = False
    ) -> list[dict[str, Any]]:
        """Resolve pictures into what `encode_conversation` reads (a new message list,
        `resolve_images`' rule): user pictures -> "features" (N, E), assistant pictures ->
        "ids" and, with `vq_targets` and a spatial VQ, "vq_ids" (h*w,). Parts that have them
        are kept."""
        return resolve_images(messages, self._fetch, self.config.image_tokenizer, vq_targets)

    def _fetch(self, part: dict[str, Any], what: str) -> torch.Tensor | None:
        """One picture's "ids" / "features" (svq) or "spatial_ids" (None without a spatial VQ)."""
        if what == "spatial_ids":
            if self.spatial is None:
                return None
            return self.spatial.encode(self._pixels(part, self.spatial.config.image_size))[0].cpu()
        pixels = self._pixels(part, self.svq.config.image_size)
        if what == "ids":
            return self.svq.tokenize(pixels)[0].cpu()
        return self.svq.encode(pixels)[0].float().cpu()

    @torch.no_grad()
    def image_ids(self, image: Any) -> torch.Tensor:
        """(N,) codebook ids of one picture (a PIL image or a path): e.g. a reference whose
        person tokens `generate(pinned_ids=[pins_from(ids, positions)])` keeps."""
        return self._fetch({"image": image}, "ids")

    def encode(
        self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False, **kw: Any
    ):
        """`prepare` + `encode_conversation`: an `EncodedConversation`."""
        return encode_conversation(
            self.prepare(messages, **kw), self.tokenizer, self.vocab, add_generation_prompt
        )

    def embed(self, batch: ConversationBatch) -> torch.Tensor:
        """Input embeddings (B, T, D) with the projected features at the `<image>` tokens."""
        embeds = self.llm.get_input_embeddings()(batch.input_ids)
        if batch.image_features is None:
            return embeds
        image_embeds = self.projector(batch.image_features)  # (M, N, D)
        return inject_image_embeds(embeds, batch.input_ids, image_embeds, self.vocab.image_id)

    def lm_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """() next-token cross-entropy of `logits` (M, V) against `targets` (M,), the labelled
        tokens: their mean, or with the config's image_token_loss_weight w != 1 the weighted
        mean sum(w_i * ce_i) / sum(w_i), image-span tokens weighing w and text tokens 1, codes
        at `positions` (M,) >= its image_prefix_tokens w * image_suffix_loss_weight; with its
        constrained_lm_loss each ce_i over the tokens allowed there (`span_cross_entropy`);
        with its code_target_temperature > 0 a code's ce_i against soft targets
        (`svq.llm.soft_targets`)."""
        c = self.config
        w = c.image_token_loss_weight
        soft = c.code_target_temperature > 0
        plain = w == 1.0 and c.image_suffix_loss_weight == 1.0
        if plain and not soft and not c.constrained_lm_loss:
            return F.cross_entropy(logits.float(), targets)

        def hard(rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # (m, V) -> (m,)
            if c.constrained_lm_loss:
                return span_cross_entropy(rows, labels, self.vocab)
            return F.cross_entropy(rows.float(), labels, reduction="none")

        if soft:  # the codes against their soft targets, the rest as before: each once
            code = self.vocab.is_code(targets)
            ce = logits.new_zeros(targets.shape, dtype=torch.float32)  # (M,)
            ce[~code] = hard(logits[~code], targets[~code])
            ce[code] = soft_code_cross_entropy(
                logits[code],
                targets[code],
                self.vocab,
                self.code_targets(),
                c.constrained_lm_loss,
            )
        else:
            ce = hard(logits, targets)  # (M,)
        if plain:
            return ce.mean()
        span = self.vocab.is_code(targets) | (targets == self.vocab.boi_id)
        span |= targets == self.vocab.eoi_id
        weights = torch.where(span, w, 1.0).to(ce.dtype)
        if c.image_suffix_loss_weight != 1.0:
            if positions is None:
                raise ValueError("image_suffix_loss_weight needs the codes' span positions")
            suffix = positions >= c.image_prefix_tokens
            weights = torch.where(suffix, weights * c.image_suffix_loss_weight, weights)
        return (weights * ce).sum() / weights.sum().clamp_min(1e-12)

    def code_targets(self) -> torch.Tensor:
        """The soft targets of the config's code_target_temperature over the svq codebook:
        (N, K, K) per position, (1, K, K) shared (`neighbour_targets`), made once per
        temperature."""
        t = self.config.code_target_temperature
        if self._code_targets is None or self._code_targets[0] != t:
            self._code_targets = (t, neighbour_targets(self.svq.codebook.codes, t))
        return self._code_targets[1]

    def forward(
        self,
        batch: ConversationBatch,
        full_logits: bool = True,
        extra: ConversationBatch | None = None,
    ) -> SVQChatOutput:
        """The training pass: next-token loss on the labels, and the VQ head's loss on the
        written images that have spatial targets (LLM hidden states at their code tokens).

        full_logits False: the output layer runs only at the positions that predict a label
        (assistant tokens), not at all B x T (the same loss; with many code tokens in the
        vocabulary the output layer is most of a small LLM's step), and `logits` is None.
        extra: a second batch (e.g. short chats of another kind) whose LM loss comes back as
        `extra_lm_loss`, not in `loss`: one call, so one forward pass for DDP.
        """
        use_vq = self.vq_head is not None and batch.vq_targets is not None
        # HF's own loss is the plain mean over the whole vocabulary; anything else is ours
        c = self.config
        by_place = c.image_suffix_loss_weight != 1.0
        weighted = c.image_token_loss_weight != 1.0 or c.constrained_lm_loss or by_place
        weighted |= c.code_target_temperature > 0
        targets = batch.labels[:, 1:]  # (B, T-1): position t predicts token t+1
        labelled = targets != -100
        positions = None  # (M,) each label's place in its image span, when the loss needs it
        if by_place:
            positions = self.vocab.code_positions(batch.input_ids)[:, 1:][labelled]
        if full_logits:
            out = self.llm(
                inputs_embeds=self.embed(batch),
                attention_mask=batch.attention_mask,
                labels=None if weighted else batch.labels,
                output_hidden_states=use_vq,
            )
            logits = out.logits
            lm_loss = (
                self.lm_loss(logits[:, :-1][labelled], targets[labelled], positions)
                if weighted
                else out.loss
            )
        else:  # HF convention: hidden_states[-1] is the final (normed) hidden state
            out = self.llm(
                inputs_embeds=self.embed(batch),
                attention_mask=batch.attention_mask,
                output_hidden_states=True,
                logits_to_keep=1,
            )
            hidden = out.hidden_states[-1][:, :-1][labelled]  # (M, D)
            head_logits = self.llm.get_output_embeddings()(hidden)  # (M, V)
            lm_loss, logits = self.lm_loss(head_logits, targets[labelled], positions), None
        vq_loss = None
        if use_vq:
            keep = (batch.vq_targets != -100).any(1)  # images with targets
            if bool(keep.any()):
                rows, positions = batch.code_rows[keep], batch.code_positions[keep]
                hidden = out.hidden_states[-1][rows.unsqueeze(1), positions]  # (G, N, D)
                vq_loss = self.vq_head.loss(hidden, batch.vq_targets[keep])
        loss = self.config.lm_loss_weight * lm_loss
        if vq_loss is not None:
            loss = loss + self.config.vq_loss_weight * vq_loss
        extra_lm_loss = (
            self.forward(extra, full_logits=False).lm_loss if extra is not None else None
        )
        return SVQChatOutput(loss, lm_loss, vq_loss, logits, extra_lm_loss)

    @torch.no_grad()
    def decode_images(
        self,
        code_ids: torch.Tensor,
        hidden: torch.Tensor | None = None,
        image_decoder: str | None = None,
    ) -> torch.Tensor:
        """Written images -> pixels (G, 3, H, W), unbounded.

        code_ids: (G, N) codebook ids (image_decoder "svq": svq decoder on the codebook
        vectors; "spatial": (G, h*w) spatial ids, the spatial VQ's decoder);
        hidden: (G, N, D) LLM states at the code tokens ("vq_head": VQ head -> spatial ids ->
        spatial VQ decoder).
        """
        route = image_decoder or self.config.image_decoder
        if route not in IMAGE_DECODERS:
            raise ValueError(f"image_decoder {route!r} is not one of {IMAGE_DECODERS}")
        if (route == "spatial") != (self.config.image_tokenizer == "spatial"):
            raise ValueError(
                f"image_decoder {route!r} cannot decode ids of the {self.config.image_tokenizer!r} "
                "image tokenizer"
            )
        if route == "spatial":
            return self.spatial.decode(code_ids.to(self.device))
        if route == "svq":
            return self.svq.detokenize(code_ids.to(self.device))
        if self.vq_head is None or self.spatial is None or hidden is None:
            raise ValueError(
                "image_decoder 'vq_head' needs a VQ head, a spatial VQ and hidden states"
            )
        return self.spatial.decode(self.vq_head.predict(hidden))

    @torch.no_grad()
    def generate(
        self,
        conversations: Sequence[Sequence[dict[str, Any]]],
        max_new_tokens: int = 256,
        do_sample: bool = False,
        image_decoder: str | None = None,
        image_temperature: float | None = None,
        image_top_k: int | None = None,
        image_top_p: float | None = None,
        pinned_ids: Sequence[torch.Tensor | None] | None = None,
        image_guidance: float | None = None,
        **generate_kwargs: Any,
    ) -> list[dict[str, Any]]:
        """The assistant's next message for each conversation (one batched `generate`).

        Each reply is `{"role": "assistant", "content": [parts]}` with text parts and image
        parts `{"type": "image", "image": PIL image, "ids": (N,) codebook ids}`; the ids let the
        reply go back into the conversation without re-encoding the picture.
        generate_kwargs go to `model.generate` (temperature, top_p, top_k, ...): they sample
        every token. image_temperature (> 0) samples the pictures' codes only, cut to
        image_top_k / image_top_p, and keeps the text greedy (`ImageSpanSampler`).
        pinned_ids: per conversation, None or (N,) codes that fix positions of every picture
        it writes (-1: free; `pins_from(reference_ids, positions)`), the rest written around
        them (`PinnedCodes`): e.g. the person's tokens of a reference picture keep the look.
        image_guidance: classifier-free guidance scale of the codes (`ImageGuidance`; None: the
        config's image_guidance; 1: none).
        """
        route = image_decoder or self.config.image_decoder
        items = [self.encode(messages, add_generation_prompt=True) for messages in conversations]
        pad = self.pad_token_id
        batch = collate(items, pad, padding_side="left").to(self.device)
        processors = LogitsProcessorList([ImageSpanLogitsProcessor(self.vocab)])
        if pinned_ids is not None:
            if len(pinned_ids) != len(conversations):
                raise ValueError(f"pinned_ids: {len(pinned_ids)} entries for "
                                 f"{len(conversations)} conversations")  # fmt: skip
            free = torch.full((self.vocab.num_positions,), -1, dtype=torch.long)
            rows = [free if p is None else torch.as_tensor(p).long().cpu() for p in pinned_ids]
            if any(r.shape != free.shape for r in rows):
                raise ValueError(f"pinned_ids: each entry is None or ({free.numel()},) codes")
            processors.append(PinnedCodes(self.vocab, torch.stack(rows)))
        guidance = self.config.image_guidance if image_guidance is None else image_guidance
        if guidance != 1.0:
            processors.append(ImageGuidance(self.llm, self.vocab, guidance))
        if image_temperature is not None:
            if do_sample or generate_kwargs.keys() & {"temperature", "top_k", "top_p"}:
                raise ValueError("image_temperature samples the pictures only: no do_sample, "
                                 "temperature, top_k or top_p with it")  # fmt: skip
            processors.append(
                ImageSpanSampler(self.vocab, image_temperature, image_top_k, image_top_p)
            )
            # generate's own warpers off: the sampler has applied them to the pictures
            do_sample, generate_kwargs = True, {**generate_kwargs, "top_k": None, "top_p": None,
                                                "temperature": None}  # fmt: skip
        out = self.llm.generate(
            input_ids=batch.input_ids,  # the processor reads them; the model reads the embeds
            attention_mask=batch.attention_mask,
            inputs_embeds=self.embed(batch),
            logits_processor=processors,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=pad,
            return_dict_in_generate=True,
            output_hidden_states=-1 if route == "vq_head" else False,  # -1: last layer only
            **generate_kwargs,
        )
        prompt = batch.input_ids.shape[1]
        hidden = None
        if route == "vq_head":  # (B, prompt + new - 1, D): state of every input position
            steps = out.hidden_states
            hidden = torch.cat([steps[0][-1], *(step[-1] for step in steps[1:])], dim=1)
        stop = self._stop_ids()
        replies, images, where = [], [], []  # where: (reply, part index) of each image
        for row, sequence in enumerate(out.sequences[:, prompt:].tolist()):
            end = next((i for i, t in enumerate(sequence) if t in stop), len(sequence))
            content: list[dict[str, Any]] = []
            for part in split_reply(sequence[:end], self.vocab):
                if part.kind == "text":
                    text = self.tokenizer.decode(part.tokens, skip_special_tokens=True).strip()
                    if text:
                        content.append({"type": "text", "text": text})
                    continue
                ids = self.vocab.tokens_to_codes(torch.tensor(part.tokens))
                state = None
                if hidden is not None:
                    begin = prompt + part.start
                    state = hidden[row, begin : begin + self.vocab.num_positions]
                images.append((ids, state))
                where.append((row, len(content)))
                content.append({"type": "image", "image": None, "ids": ids})
            begun = sum(t == self.vocab.boi_id for t in sequence[:end])
            drawn = sum(p["type"] == "image" for p in content)
            # incomplete_images: spans begun but cut off (by max_new_tokens), not returned
            replies.append(
                {"role": "assistant", "content": content, "incomplete_images": begun - drawn}
            )
        if images:
            states = torch.stack([s for _, s in images]) if hidden is not None else None
            pixels = self.decode_images(torch.stack([i for i, _ in images]), states, route)
            for (row, index), picture in zip(where, to_uint8(pixels), strict=True):
                replies[row]["content"][index]["image"] = Image.fromarray(picture)
        return replies

    def _stop_ids(self) -> set[int]:
        """Token ids that end a reply: the generation config's eos (int or list) and pad."""
        stop = set()
        for value in (
            self.llm.generation_config.eos_token_id,
            self.tokenizer.eos_token_id,
            self.tokenizer.pad_token_id,
        ):
            if value is not None:
                stop.update(value if isinstance(value, list) else [value])
        return stop

    def chat(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """The assistant's reply to one conversation; see `generate`."""
        return self.generate([messages], **kwargs)[0]

    # --- files
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the whole folder (see the module docstring)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.config.mode == "lora":
            base = self._base.state_dict()
            self.llm.get_base_model().save_pretrained(directory / "llm", state_dict=base)
            save_adapter(self.llm, directory / "adapter")
        else:
            self.llm.save_pretrained(directory / "llm")
        self.tokenizer.save_pretrained(directory / "llm")
        self.svq.save_pretrained(directory / "svq")  # with svq/codebook.safetensors
        self.projector.save_pretrained(directory / "projector")
        if self.vq_head is not None:
            self.vq_head.save_pretrained(directory / "vq_head")
        if self.spatial is not None:
            self.spatial.save_pretrained(directory / "spatial_vq")
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2))
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        trainable: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> SVQChat:
        """Load a folder written by `save_pretrained`. `trainable`: the LoRA adapter's weights
        require grad (to continue training); dtype applies to the LLM."""
        directory = Path(directory)
        if directory.is_file():
            raise NotADirectoryError(f"{directory} is a file; expected an SVQChat folder")
        if not directory.exists():
            raise FileNotFoundError(f"SVQChat folder {directory} does not exist")
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}: not a saved SVQChat")
        config = SVQChatConfig.from_dict(json.loads((directory / CONFIG_NAME).read_text()))
        llm = load_llm(directory / "llm", dtype)
        tokenizer = load_tokenizer(directory / "llm")
        vocab = ImageVocabulary.from_dict(config.vocabulary)
        found = ImageVocabulary.from_tokenizer(
            tokenizer, vocab.num_codes, vocab.num_positions, vocab.per_position
        )
        if found != vocab:
            raise ValueError(f"{directory}: the tokenizer's image tokens {found} != {vocab}")
        svq = StyledVAEVQ.load(directory / "svq", require_codebook=True)
        projector = ImageProjector.from_pretrained(str(directory / "projector"))
        vq_head = spatial = None
        if (directory / "vq_head").is_dir():
            vq_head = VQHead.from_pretrained(str(directory / "vq_head"))
        if (directory / "spatial_vq").is_dir():
            spatial = SpatialVQ.from_pretrained(str(directory / "spatial_vq"))
        chat = cls(llm, tokenizer, config, svq, projector, vq_head, spatial)
        if config.mode == "lora":
            chat._base = BaseWeights(llm)
            chat.llm = load_adapter(llm, directory / "adapter", trainable)
        chat.train(False)
        return chat.to(device) if device is not None else chat
