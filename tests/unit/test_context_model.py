"""ContextModel: shapes, masks, causality, and step-wise inference == training computation."""

import pytest
import torch

from merc.models.context_model import ContextConfig, ContextModel, window_indices

torch.set_num_threads(2)
CFG = ContextConfig(hidden=32, context=4, layers=2, heads=4)


def make_model(seed: int = 0) -> ContextModel:
    torch.manual_seed(seed)
    model = ContextModel(CFG).eval()
    # A non-zero "nothing observed" vector, so the no-modality path is visible in the output.
    with torch.no_grad():
        model.fusion.nothing.normal_()
    return model


def dialogues(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    text = torch.randn(n, CFG.text_dim, generator=g)
    speaker = torch.randint(0, 3, (n,), generator=g)
    mask = torch.zeros(n, 3)
    mask[:, 0] = 1
    return text, mask, speaker


def stepwise(model, text, mask, speaker, lengths):
    """What the service does: one utterance at a time, feeding back the stored fused vectors."""
    K, H = CFG.context, CFG.hidden
    outs, start = [], 0
    for n in lengths:
        history, speakers = [], []
        for t in range(start, start + n):
            ctx = torch.zeros(1, K, H)
            ctx_spk = torch.zeros(1, K, dtype=torch.long)
            valid = torch.zeros(1, K)
            past = history[-K:]
            for j, (f, s) in enumerate(zip(past, speakers[-K:])):
                slot = K - len(past) + j  # right-aligned, oldest first
                ctx[0, slot], ctx_spk[0, slot], valid[0, slot] = f, s, 1
            out = model(text[t : t + 1], mask[t : t + 1], speaker[t : t + 1], ctx, ctx_spk, valid)
            history.append(out["fused"][0])
            speakers.append(speaker[t])
            outs.append(out["logits"][0])
        start += n
    return torch.stack(outs)


def test_shapes_and_weights():
    model = make_model()
    B, K, H = 5, CFG.context, CFG.hidden
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.float32)
    out = model(torch.randn(B, 384), mask, torch.zeros(B, dtype=torch.long), torch.randn(B, K, H),
                torch.zeros(B, K, dtype=torch.long), torch.ones(B, K))
    assert out["logits"].shape == (B, 7)
    assert out["sentiment_logits"].shape == (B, 3)
    assert out["fused"].shape == (B, H)
    assert out["weights"].shape == (B, 3)
    # Text-only model: all weight on text when text is there, none otherwise.
    expected = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.float32)
    assert torch.equal(out["weights"], expected)
    # Without text, the fused vector does not depend on the (absent) text input.
    other = model.fuse(torch.randn(B, 384), mask)
    assert torch.allclose(other[2:4], out["fused"][2:4])
    assert not torch.allclose(other[[0, 1, 4]], out["fused"][[0, 1, 4]])


def test_invalid_slots_are_ignored():
    model = make_model()
    B, K, H = 3, CFG.context, CFG.hidden
    args = dict(text=torch.randn(B, 384), modality_mask=torch.tensor([[1.0, 0, 0]] * B),
                speaker=torch.tensor([0, 1, 2]), ctx_speaker=torch.randint(0, 3, (B, K)))
    valid = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    ctx = torch.randn(B, K, H)
    garbage = torch.where(valid.bool().unsqueeze(-1), ctx, torch.randn(B, K, H) * 100)
    a = model(ctx_fused=ctx, ctx_valid=valid, **args)["logits"]
    b = model(ctx_fused=garbage, ctx_valid=valid, **args)["logits"]
    assert torch.allclose(a, b, atol=1e-6)
    # ...while valid slots matter.
    c = model(ctx_fused=torch.randn(B, K, H), ctx_valid=valid, **args)["logits"]
    assert not torch.allclose(a[[0, 2]], c[[0, 2]])
    assert torch.allclose(a[1], c[1], atol=1e-6)


def test_window_indices():
    w = window_indices([3, 2], context=2)
    assert w.tolist() == [[-1, -1], [-1, 0], [0, 1], [-1, -1], [-1, 3]]


@pytest.mark.parametrize("lengths", [[1], [7, 3, 12], [CFG.context + 1, 2]])
def test_stepwise_inference_equals_training_computation(lengths):
    model = make_model()
    text, mask, speaker = dialogues(lengths)
    with torch.no_grad():
        batched = model.forward_dialogues(text, mask, speaker, window_indices(lengths, CFG.context))["logits"]
        steps = stepwise(model, text, mask, speaker, lengths)
    assert torch.allclose(batched, steps, atol=1e-5), (batched - steps).abs().max()


def test_gradients_flow_through_context():
    model = make_model().train()
    lengths = [5]
    text, mask, speaker = dialogues(lengths)
    text.requires_grad_(True)
    out = model.forward_dialogues(text, mask, speaker, window_indices(lengths, CFG.context))
    out["logits"][-1].sum().backward()
    # The last target's loss reaches earlier utterances through their fused vectors.
    assert text.grad[0].abs().sum() > 0


def test_causal_future_does_not_change_the_past():
    model = make_model()
    lengths = [10]
    text, mask, speaker = dialogues(lengths)
    window = window_indices(lengths, CFG.context)
    with torch.no_grad():
        before = model.forward_dialogues(text, mask, speaker, window)["logits"]
        text2, speaker2 = text.clone(), speaker.clone()
        text2[6:] = torch.randn(4, 384)
        speaker2[6:] = (speaker2[6:] + 1) % 3
        after = model.forward_dialogues(text2, mask, speaker2, window)["logits"]
    assert torch.allclose(before[:6], after[:6], atol=1e-6)
    assert not torch.allclose(before[6:], after[6:])


def test_speakers_beyond_max_wrap():
    model = make_model()
    B, K, H = 2, CFG.context, CFG.hidden
    out = model(torch.randn(B, 384), torch.ones(B, 3), torch.tensor([CFG.max_speakers + 3, 40]),
                torch.randn(B, K, H), torch.full((B, K), 17), torch.ones(B, K))
    assert torch.isfinite(out["logits"]).all()
