"""The understanding projector: per-token (LLaVA's) and joint ("all") reads, shapes, save/load,
and the chat building one from its tokenizer's geometry."""

from __future__ import annotations

import pytest
import torch
from test_llm_tiny import SMALL_HEAD, spatial_model, svq_model, tokenizer

from svq.llm import ImageProjector, ProjectorConfig, SVQChat
from svq.llm.tiny import tiny_llm


def rows_moved_by(projector: ImageProjector, features: torch.Tensor, token: int) -> torch.Tensor:
    """(N,) bool: which embeddings change when one token's features change."""
    moved = features.clone()
    moved[:, token] += 1.0
    with torch.no_grad():
        before, after = projector(features), projector(moved)
    return (before - after).abs().amax(dim=(0, 2)) > 0


def test_token_reads_map_each_token_on_its_own():
    projector = ImageProjector(ProjectorConfig(in_dim=8, out_dim=16, num_tokens=6))
    assert projector.config.reads == "token" and projector.mix is None
    features = torch.randn(3, 6, 8)
    assert projector(features).shape == (3, 6, 16)
    moved = rows_moved_by(projector, features, 2)
    assert moved.tolist() == [False, False, True, False, False, False]
    assert projector(features[0, 0]).shape == (16,)  # any leading shape


@pytest.mark.parametrize(("depth", "mix_dim"), [(1, None), (2, None), (2, 20), (3, 4)])
def test_all_reads_make_every_embedding_from_every_token(tmp_path, depth, mix_dim):
    config = ProjectorConfig(in_dim=8, out_dim=16, hidden_dim=12, num_tokens=6, depth=depth,
                             reads="all", mix_dim=mix_dim)  # fmt: skip
    projector = ImageProjector(config).eval()
    width = mix_dim or 8
    assert (projector.mix.in_features, projector.mix.out_features) == (6 * 8, 6 * width)
    assert projector.mlp[0].in_features == width
    assert len(projector.mlp) == 2 * depth - 1
    features = torch.randn(3, 6, 8)
    out = projector(features)
    assert out.shape == (3, 6, 16)
    assert rows_moved_by(projector, features, 2).all()
    # the rows are the joint layer's slices: row i of a batch does not depend on the others
    assert torch.allclose(projector(features[1:2]), out[1:2], atol=1e-6)
    projector.save_pretrained(tmp_path)
    again = ImageProjector.from_pretrained(str(tmp_path)).eval()
    assert again.config.reads == "all" and again.config.num_tokens == 6
    assert torch.equal(again(features), out)


def test_all_reads_refuse_features_of_another_shape():
    projector = ImageProjector(ProjectorConfig(in_dim=8, out_dim=16, num_tokens=6, reads="all"))
    with pytest.raises(ValueError, match=r"expected features \(\.\.\., 6, 8\), got \(2, 5, 8\)"):
        projector(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="reads 'grid' not in"):
        ProjectorConfig(reads="grid")


def test_chat_builds_a_joint_projector_for_its_tokenizer():
    """SVQChat.build(projector={"reads": "all"}): the projector reads the tokenizer's N x E."""
    tok = tokenizer()
    svq = svq_model(32, False)
    chat = SVQChat.build(tiny_llm(tok), svq, spatial_model(), tokenizer=tok, vq_head=SMALL_HEAD,
                         projector={"reads": "all"})  # fmt: skip
    n, e = svq.config.num_tokens, svq.config.token_dim
    assert chat.projector.config.num_tokens == n and chat.projector.mix.in_features == n * e
    width = chat.llm.get_input_embeddings().weight.shape[1]
    assert chat.projector(torch.randn(2, n, e)).shape == (2, n, width)
