"""The LLM layer: a causal LLM that reads and writes svq's image language in a chat.

    from svq.llm import SVQChat
    chat = SVQChat.build("path/to/Qwen2.5-0.5B-Instruct", svq, spatial)  # svq has a codebook
    reply = chat.chat([{"role": "user", "content": [{"type": "image", "image": "me.png"},
                                                    {"type": "text", "text": "Where was I?"}]}])
    chat.save_pretrained("out/chat"); chat = SVQChat.from_pretrained("out/chat")

Parts (one job per file):
    vocabulary     ImageVocabulary: <boi>, <eoi>, <image>, code tokens; code id <-> token id
    embeddings     extend_llm: add the tokens, resize embeddings, initialise the new rows
    lora           LoRA with trainable new rows (peft trainable tokens), ties kept
    projector      ImageProjector: features (B, 36, E) -> embeddings at the <image> tokens
    vq_head        VQHead: hidden states at 36 code tokens -> spatial VQ logits (B, h*w, K)
    logits         ImageSpanLogitsProcessor: exactly 36 codes between <boi> and <eoi>;
                   ImageSpanSampler: sampled pictures, greedy text;
                   PinnedCodes: chosen positions fixed (e.g. a reference's person tokens)
    conversation   messages -> input_ids, labels, image positions, VQ targets; batching
    chat           SVQChat: everything together, chat / forward / save / load
    loading        load_llm (strict weights), load_tokenizer (tokenizer.json as saved)
    tiny           a from-scratch Qwen2 + sentencepiece tokenizer for tests and the demo
    pretrain_data  language pre-training: world text, captions followed by their pictures
    sft_data       chat SFT data: world / JSONL chats, the image cache, SFTDataset
                   (imported on its own: `from svq.llm import sft_data`)
    describe_data  one-turn chats about the chats' own pictures: photo -> its caption
"""

from .chat import SVQChat, SVQChatConfig, SVQChatOutput
from .conversation import (
    IGNORE_INDEX,
    ConversationBatch,
    EncodedConversation,
    ReplyPart,
    collate,
    encode_conversation,
    split_reply,
    template_messages,
)
from .embeddings import embeddings_tied, extend_llm, init_new_rows, resize_embeddings
from .loading import load_llm, load_tokenizer
from .logits import (
    ImageSpanLogitsProcessor,
    ImageSpanSampler,
    PinnedCodes,
    pins_from,
    span_state,
)
from .lora import LoraOptions, apply_lora, lora_config
from .projector import ImageProjector, ProjectorConfig, inject_image_embeds
from .vocabulary import BOI, EOI, IMAGE, ImageVocabulary, code_token_names
from .vq_head import VQHead, VQHeadConfig

__all__ = [
    "BOI",
    "EOI",
    "IGNORE_INDEX",
    "IMAGE",
    "ConversationBatch",
    "EncodedConversation",
    "ImageProjector",
    "ImageSpanLogitsProcessor",
    "ImageSpanSampler",
    "ImageVocabulary",
    "LoraOptions",
    "PinnedCodes",
    "ProjectorConfig",
    "ReplyPart",
    "SVQChat",
    "SVQChatConfig",
    "SVQChatOutput",
    "VQHead",
    "VQHeadConfig",
    "apply_lora",
    "code_token_names",
    "collate",
    "embeddings_tied",
    "encode_conversation",
    "extend_llm",
    "init_new_rows",
    "inject_image_embeds",
    "load_llm",
    "load_tokenizer",
    "lora_config",
    "pins_from",
    "resize_embeddings",
    "span_state",
    "split_reply",
    "template_messages",
]
