"""svq: an ordered 36-token image language for small causal LLMs."""

from .config import PRESETS, SVQConfig
from .model import StyledVAEVQ, SVQOutput

__all__ = ["PRESETS", "SVQConfig", "SVQOutput", "StyledVAEVQ"]
__version__ = "0.1.0"
