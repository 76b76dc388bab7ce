"""svq: an ordered 36-token image language for small causal LLMs.

Models (import nothing above them):
    config, config_base       SVQConfig and its presets; what every config dataclass shares
    encoder, decoder, layers, conv_layers, model   the tokenizer: image <-> 36 ordered tokens
    codebook/                 k-means and the codebook (stage 2): tokens <-> ids
    spatial_vq, spatial_vq_layers   the position-aligned spatial VQ (the last mile)
    ids_to_grid               the 36 ids -> the spatial VQ's grid, in parallel
    lpips, discriminator      losses the trainers use
    data/                     the chat world and image loaders
    llm/                      the LLM layer: SVQChat
    hub, images, errors, progress, provenance   saving/loading, picture helpers, one-line errors
Above them: eval/ (measurement), train/ (one script per stage), configs/ (option files), and
the app: cli, commands/, demo, demo_record. tests/test_import_layers.py keeps the arrows one way.
"""

from .config import PRESETS, SVQConfig
from .model import StyledVAEVQ, SVQOutput

__all__ = ["PRESETS", "SVQConfig", "SVQOutput", "StyledVAEVQ"]
__version__ = "0.1.0"
