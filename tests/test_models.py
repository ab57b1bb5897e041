"""Backbones: padding invariance, no NaN, causal masking, learning, artifact round trip."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqrec.artifact_files import ArtifactChecksumError
from seqrec.artifacts import ArtifactError, ArtifactInfo, load_artifact, save_artifact
from seqrec.data.sequences import Sequences
from seqrec.hashing import CHECKSUM_SUFFIX, file_sha256
from seqrec.inference import top_k
from seqrec.models import ModelConfig, build_model
from seqrec.models.base import _item_rows

ARCHS = ["sasrec", "bert4rec"]


def tiny(arch: str, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(arch=arch, n_items=30, hidden=16, n_heads=2, max_len=10, **overrides)
    return build_model(config).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_gives_same_logits_and_no_nan(arch: str) -> None:
    model = tiny(arch)
    history = [3, 17, 5, 9]
    unpadded = model.logits(torch.tensor([history]))
    padded = model.logits(torch.tensor([[0] * 6 + history, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]))
    assert not torch.isnan(padded).any()
    torch.testing.assert_close(padded[:1, 1:], unpadded[:, 1:], atol=1e-5, rtol=1e-5)
    assert torch.isinf(padded[:, 0]).all()


def test_sasrec_is_causal() -> None:
    model = tiny("sasrec")
    seqs = torch.tensor([[4, 5, 6, 7, 8]])
    changed = seqs.clone()
    changed[0, -1] = 20
    hidden, hidden_changed = model.encode(seqs), model.encode(changed)
    torch.testing.assert_close(hidden[:, :-1], hidden_changed[:, :-1])
    assert not torch.allclose(hidden[:, -1], hidden_changed[:, -1])


def test_bert4rec_is_bidirectional() -> None:
    model = tiny("bert4rec")
    seqs = torch.tensor([[4, 5, 6, 7, 8]])
    changed = seqs.clone()
    changed[0, -1] = 20
    assert not torch.allclose(model.encode(seqs)[:, 0], model.encode(changed)[:, 0])


@pytest.mark.parametrize("arch", ARCHS)
def test_last_position_shortcut_matches_the_full_encoder(arch: str) -> None:
    """user_repr runs the final block on the last position alone: same values, same gradients."""
    model = tiny(arch, n_blocks=3).double()  # float64: compare without rounding noise
    seqs = torch.tensor([[0, 0, 0, 3, 17, 5, 9], [1, 2, 3, 4, 5, 6, 7]])
    short = model.encode(seqs, last_only=True)
    full = model.encode(seqs)
    assert short.shape == (2, 1, 16)
    torch.testing.assert_close(short[:, -1], full[:, -1])
    grads = []
    for last_only in (True, False):
        model.zero_grad()
        model.encode(seqs, last_only=last_only)[:, -1].square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for short_grad, full_grad in zip(*grads, strict=True):
        torch.testing.assert_close(short_grad, full_grad)


def padded_reference(model: torch.nn.Module, seqs: torch.Tensor) -> torch.Tensor:
    """The encoder with every layer run over every position, padding included, then zeroed:
    what the blocks computed before they ran their position-wise layers on real items alone."""
    valid = seqs != 0
    length = seqs.shape[1]
    positions = torch.arange(length - 1, -1, -1)
    x = model.item_emb(seqs) * model.config.hidden**0.5 + model.pos_emb(positions)
    x = x * valid.unsqueeze(-1)
    mask = model._attention_mask(valid)
    for block in model.blocks:
        b, _, d = x.shape
        q, k, v = block.qkv(block.attn_norm(x)).split(d, dim=-1)
        heads = [t.view(b, length, block.n_heads, -1).transpose(1, 2) for t in (q, k, v)]
        attended = F.scaled_dot_product_attention(*heads, attn_mask=mask)
        x = x + block.attn_out(attended.transpose(1, 2).reshape(b, length, d))
        x = (x + block.ff(block.ff_norm(x))) * valid.unsqueeze(-1)
    return model.final_norm(x)


@pytest.mark.parametrize("arch", ARCHS)
def test_real_items_alone_give_the_padded_encoders_values_and_gradients(arch: str) -> None:
    """The blocks skip padding in their position-wise layers; nothing a real position sees
    may change, forward or backward."""
    model = tiny(arch, n_blocks=2).double()
    seqs = torch.tensor([[0, 0, 0, 0, 0, 0, 3, 17, 5, 9], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    seqs = torch.cat([seqs, torch.tensor([[0] * 9 + [29], [0] * 10])])  # one item; none
    valid = (seqs != 0).unsqueeze(-1)
    grads = []
    for encode in (model.encode, lambda s: padded_reference(model, s)):
        model.zero_grad()
        hidden = encode(seqs) * valid
        (hidden.square().sum() + hidden[:, -1].sum()).backward()
        used = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        grads.append((hidden.detach(), used))
    (ours, our_grads), (reference, reference_grads) = grads
    torch.testing.assert_close(ours, reference)
    assert len(our_grads) == len(reference_grads) > 0
    for mine, theirs in zip(our_grads, reference_grads, strict=True):
        torch.testing.assert_close(mine, theirs)


def test_packed_rows_take_few_sizes_and_hold_every_real_item() -> None:
    """Packed tensors come in at most 8 sizes per batch shape (any size fragmented glibc's heap:
    a student's memory grew every epoch); every real item is in, padding and spares are not."""
    generator = torch.Generator().manual_seed(0)
    sizes = set()
    for _ in range(200):
        lengths = torch.randint(0, 51, (128,), generator=generator)
        valid = torch.arange(50)[None, :] >= 50 - lengths[:, None]
        rows = _item_rows(valid)
        real = rows[rows < valid.numel()]
        assert torch.equal(real, valid.reshape(-1).nonzero().squeeze(1))
        assert (rows[len(real) :] == valid.numel()).all()
        sizes.add(len(rows))
    assert 1 < len(sizes) <= 8


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_falls_and_gradients_skip_padding(arch: str) -> None:
    model = tiny(arch, dropout=0.0).train()
    rng = np.random.default_rng(0)
    # A learnable pattern: each sequence counts upward from a random start.
    starts = rng.integers(1, 15, size=64)
    windows = torch.as_tensor(starts[:, None] + np.arange(11)[None, :])
    windows[:8, :4] = 0  # some padding
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss = model.training_loss(windows, generator)
        optimizer.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        assert model.item_emb.weight.grad[0].abs().sum() == 0
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_artifact_round_trip(tmp_path, arch: str) -> None:
    model = tiny(arch)
    info = ArtifactInfo(model=model.config, item_ids=[f"i{n}" for n in range(30)], metrics={"x": 1})
    version = save_artifact(tmp_path, model, info)
    loaded = load_artifact(tmp_path)
    seqs = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6, 7, 8], [0] * 9 + [29]])
    torch.testing.assert_close(loaded.model.logits(seqs), model.logits(seqs), rtol=0, atol=0)
    assert loaded.info.item_ids == info.item_ids
    assert loaded.info.metrics == {"x": 1}
    assert loaded.version == version
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


def test_artifact_errors(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_artifact(tmp_path)
    model = tiny("sasrec")
    item_ids = [str(n) for n in range(30)]
    save_artifact(tmp_path, model, ArtifactInfo(model=model.config, item_ids=item_ids))
    for sidecar in tmp_path.glob(f"*{CHECKSUM_SUFFIX}"):
        sidecar.unlink()  # unverified, as before checksums: the files' content is checked too
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="cannot load the weights"):
        load_artifact(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["item_ids"] = config["item_ids"][:5]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="distinct ids"):
        load_artifact(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version"):
        load_artifact(tmp_path)


def flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_damaged_artifact_file_is_refused_by_name(tmp_path, name: str) -> None:
    """A flipped byte anywhere, even in a float of the weights that still loads, is refused."""
    model = tiny("sasrec")
    item_ids = [str(n) for n in range(30)]
    version = save_artifact(tmp_path, model, ArtifactInfo(model=model.config, item_ids=item_ids))
    assert version == file_sha256(tmp_path / "model.safetensors")
    assert (tmp_path / f"model.safetensors{CHECKSUM_SUFFIX}").read_text().startswith(version)
    path = tmp_path / name
    whole = path.read_bytes()
    flip_byte(path, len(whole) - 3)  # the last weight's bytes, or the config's closing lines
    with pytest.raises(ArtifactChecksumError, match=f"{name} is damaged"):
        load_artifact(tmp_path)
    path.unlink()
    with pytest.raises(ArtifactChecksumError, match=f"{name} is missing"):
        load_artifact(tmp_path)
    path.write_bytes(whole)
    assert load_artifact(tmp_path).version == version
    assert issubclass(ArtifactChecksumError, ArtifactError)  # the CLI's one-line error


def test_an_artifact_written_before_checksums_loads_unverified(tmp_path) -> None:
    model = tiny("bert4rec")
    info = ArtifactInfo(model=model.config, item_ids=[str(n) for n in range(30)])
    version = save_artifact(tmp_path, model, info)
    for sidecar in tmp_path.glob(f"*{CHECKSUM_SUFFIX}"):
        sidecar.unlink()
    loaded = load_artifact(tmp_path)
    assert loaded.version == version and loaded.info.item_ids == info.item_ids


def test_top_k_excludes_history_and_is_ranked() -> None:
    model = tiny("sasrec")
    histories = Sequences.from_lists([[1, 2, 3], list(range(1, 25))])
    top = top_k(model, histories, k=10)
    assert top.shape == (2, 10)
    assert not set(top[0]) & {0, 1, 2, 3}
    # Only 6 unseen items remain for the second history: the row is padded with 0.
    assert sorted(top[1, :6]) == list(range(25, 31))
    assert top[1, 6:].tolist() == [0, 0, 0, 0]
    scores = model.logits(torch.as_tensor(histories.padded(10)))
    picked = scores[0, torch.as_tensor(top[0])]
    assert (picked[:-1] >= picked[1:]).all()
