"""ContextModel: shapes, the reliability gate's masks, causality, and step-wise inference == training computation."""

import pytest
import torch

from merc.models.context_model import (
    ContextConfig,
    ContextModel,
    Observation,
    window_indices,
)

torch.set_num_threads(2)
CFG = ContextConfig(hidden=32, context=4, layers=2, heads=4)


def make_model(seed: int = 0, cfg: ContextConfig = CFG) -> ContextModel:
    torch.manual_seed(seed)
    model = ContextModel(cfg).eval()
    # Random encoder heads and a non-zero "nothing observed" vector, so every path shows in the output.
    with torch.no_grad():
        model.fusion.nothing.normal_()
        for expert in (model.fusion.audio, model.fusion.vision):
            expert.head.weight.normal_()
    return model


def observation(n: int, mask=None, seed: int = 1) -> Observation:
    g = torch.Generator().manual_seed(seed)
    if mask is None:
        mask = (torch.rand(n, 3, generator=g) < 0.6).float()
        mask[:, 0] = 1
    return Observation(torch.randn(n, CFG.text_dim, generator=g), torch.randn(n, CFG.audio_dim, generator=g),
                       torch.randn(n, CFG.vision_dim, generator=g), mask, torch.rand(n, CFG.quality_dim, generator=g))


def dialogues(lengths, seed=1):
    n = sum(lengths)
    speaker = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))
    return observation(n, seed=seed), speaker


def stepwise(model, obs, speaker, lengths):
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
            for j, (f, s) in enumerate(zip(past, speakers[-K:], strict=False)):
                slot = K - len(past) + j  # right-aligned, oldest first
                ctx[0, slot], ctx_spk[0, slot], valid[0, slot] = f, s, 1
            out = model(obs[t : t + 1], speaker[t : t + 1], ctx, ctx_spk, valid)
            history.append(out["fused"][0])
            speakers.append(speaker[t])
            outs.append(out["logits"][0])
        start += n
    return torch.stack(outs)


def step(model, obs, B):
    K, H = CFG.context, CFG.hidden
    return model(obs, torch.zeros(B, dtype=torch.long), torch.randn(B, K, H), torch.zeros(B, K, dtype=torch.long), torch.ones(B, K))


def test_shapes_and_gate_weights():
    model = make_model()
    B = 5
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.float32)
    out = step(model, observation(B, mask), B)
    assert out["logits"].shape == (B, 7)
    assert out["sentiment_logits"].shape == (B, 3)
    assert out["fused"].shape == (B, CFG.hidden)
    assert out["expert_logits"].shape == (B, 3, 7)
    w = out["weights"]
    # Absent modalities get exactly zero weight; present ones share all of it; nothing present -> zeros.
    assert torch.equal(w == 0, mask == 0)
    assert torch.allclose(w.sum(1), torch.tensor([1.0, 1, 1, 0, 1]))
    assert torch.equal(w[1], torch.tensor([1.0, 0, 0])) and torch.equal(w[2], torch.tensor([0.0, 1, 0]))


def test_absent_modalities_do_not_leak():
    model = make_model()
    B = 4
    mask = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.float32)
    a, b = observation(B, mask, seed=1), observation(B, mask, seed=2)
    # Keep each row's present modality and quality equal; change only what is absent.
    b.text[0], b.audio[1], b.vision[2], b.quality[:] = a.text[0], a.audio[1], a.vision[2], a.quality
    fa, fb = model.fusion(a)[0], model.fusion(b)[0]
    assert torch.allclose(fa, fb, atol=1e-6)


def test_quality_moves_the_gate():
    model = make_model()
    B = 2
    obs = observation(B, torch.ones(B, 3))
    obs.quality[1] = 1 - obs.quality[0]
    obs.text[1], obs.audio[1], obs.vision[1] = obs.text[0], obs.audio[0], obs.vision[0]
    w = model.fusion(obs)[1]
    assert not torch.allclose(w[0], w[1])


def test_invalid_slots_are_ignored():
    model = make_model()
    B, K, H = 3, CFG.context, CFG.hidden
    args = dict(obs=observation(B), speaker=torch.tensor([0, 1, 2]), ctx_speaker=torch.randint(0, 3, (B, K)))
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


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("lengths", [[1], [7, 3, 12], [CFG.context + 1, 2]])
def test_stepwise_inference_equals_training_computation(lengths, residual):
    model = make_model(cfg=ContextConfig(**{**vars(CFG), "expert_residual": residual}))
    obs, speaker = dialogues(lengths)
    with torch.no_grad():
        batched = model.forward_dialogues(obs, speaker, window_indices(lengths, CFG.context))["logits"]
        steps = stepwise(model, obs, speaker, lengths)
    assert torch.allclose(batched, steps, atol=1e-5), (batched - steps).abs().max()


def test_with_the_expert_residual_a_lone_clip_adds_its_encoders_log_posterior():
    plain = make_model()
    residual = make_model(cfg=ContextConfig(**{**vars(CFG), "expert_residual": True}))
    residual.load_state_dict(plain.state_dict())
    obs = observation(4, mask=torch.tensor([[0.0, 1.0, 0.0]] * 4))
    K, H = CFG.context, CFG.hidden
    args = (torch.zeros(4, dtype=torch.long), torch.zeros(4, K, H), torch.zeros(4, K, dtype=torch.long), torch.zeros(4, K))
    with torch.no_grad():
        a, b = plain(obs, *args), residual(obs, *args)
        encoder = torch.log_softmax(residual.fusion.audio.head(obs.audio), -1)
    assert torch.allclose(b["weights"][:, 1], torch.ones(4))
    assert torch.allclose(b["logits"] - a["logits"], encoder, atol=1e-5)


def test_gradients_flow_through_context_but_not_into_frozen_heads():
    model = make_model().train()
    lengths = [5]
    obs, speaker = dialogues(lengths)
    obs.text.requires_grad_(True)
    out = model.forward_dialogues(obs, speaker, window_indices(lengths, CFG.context))
    out["logits"][-1].sum().backward()
    # The last target's loss reaches earlier utterances through their fused vectors.
    assert obs.text.grad[0].abs().sum() > 0
    assert model.fusion.audio.head.weight.grad is None


def test_causal_future_does_not_change_the_past():
    model = make_model()
    lengths = [10]
    obs, speaker = dialogues(lengths)
    window = window_indices(lengths, CFG.context)
    with torch.no_grad():
        before = model.forward_dialogues(obs, speaker, window)["logits"]
        later = observation(10, obs.mask, seed=9)
        obs2 = Observation(*(torch.cat([getattr(obs, f)[:6], getattr(later, f)[6:]]) for f in ("text", "audio", "vision", "mask", "quality")))
        speaker2 = speaker.clone()
        speaker2[6:] = (speaker2[6:] + 1) % 3
        after = model.forward_dialogues(obs2, speaker2, window)["logits"]
    assert torch.allclose(before[:6], after[:6], atol=1e-6)
    assert not torch.allclose(before[6:], after[6:])


def test_speakers_beyond_max_wrap():
    model = make_model()
    B, K, H = 2, CFG.context, CFG.hidden
    out = model(observation(B, torch.ones(B, 3)), torch.tensor([CFG.max_speakers + 3, 40]),
                torch.randn(B, K, H), torch.full((B, K), 17), torch.ones(B, K))
    assert torch.isfinite(out["logits"]).all()
