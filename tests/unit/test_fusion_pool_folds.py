"""How long the fusion trains is chosen on voices and faces it has not seen (merc.training.fusion.choose_epochs)."""

import numpy as np
import torch

from merc.data import pairing
from merc.data.fusion_examples import FIT_ACTORS, POOL_FOLDS, Data, Split, fold_pools
from merc.media import quality
from merc.models.context_model import ContextConfig
from merc.pipeline.labels import LABELS
from merc.training import fusion

DIM = 4


def pool(n: int, first_id: int = 0) -> pairing.Pool:
    """n items, two variants; an item's id in its first embedding coordinate, so a draw can be traced."""
    emb = np.random.default_rng(n).standard_normal((2, n, DIM)).astype(np.float32)
    emb[:, :, 0] = first_id + np.arange(n)
    return pairing.Pool(emb, np.zeros((2, n, quality.DIM), np.float32), np.arange(n) % len(LABELS), ("clean", "noisy"))


def ids(p: pairing.Pool) -> set[int]:
    return set(p.embedding[0, :, 0].astype(int).tolist())


def test_the_folds_split_the_fit_pools_one_actor_and_half_the_faces_each_without_overlap():
    actors = np.repeat(sorted(FIT_ACTORS), 14)
    audio, vision = pool(28), pool(40)
    fit_faces = np.arange(0, 40, 2)  # the other half is dev's
    folds = fold_pools(audio, actors, vision, fit_faces)
    a, b = (folds[f"audio_{f}"] for f in POOL_FOLDS)
    assert [ids(a), ids(b)] == [set(np.flatnonzero(actors == x).tolist()) for x in sorted(FIT_ACTORS)]
    v, w = (folds[f"vision_{f}"] for f in POOL_FOLDS)
    assert not ids(v) & ids(w) and ids(v) | ids(w) == set(fit_faces.tolist())
    assert abs(len(ids(v)) - len(ids(w))) <= 1


def split(dialogues: int, rng: np.random.Generator, text_dim: int) -> Split:
    n = dialogues * 4
    emotion = rng.integers(len(LABELS), size=n)
    text = rng.standard_normal((n, text_dim)).astype(np.float32)
    text[np.arange(n), emotion] += 2.0  # learnable, so early stopping has something to see
    return Split(text, np.zeros((n, quality.DIM), np.float32), np.tile([0, 1], n // 2), emotion,
                 rng.integers(3, size=n), [4] * dialogues)


def tiny_data(text_dim: int) -> Data:
    rng = np.random.default_rng(0)
    head = torch.nn.Linear(DIM, len(LABELS))
    pools = {"audio_fit": pool(14, 0), "vision_fit": pool(14, 0), "audio_dev": pool(14, 100), "vision_dev": pool(14, 100),
             "audio_fold0": pool(7, 200), "vision_fold0": pool(7, 200), "audio_fold1": pool(7, 300), "vision_fold1": pool(7, 300)}
    return Data(split(24, rng, text_dim), split(6, rng, text_dim), split(6, rng, text_dim), head, head, {}, pools=pools)


def test_epochs_are_chosen_on_the_other_folds_voices_and_faces_then_bound_the_training_on_all(monkeypatch):
    torch.set_num_threads(1)
    cfg = fusion.FusionTrainConfig(epochs=6, patience=2, dialogues_per_batch=4,
                                   model=ContextConfig(text_dim=16, audio_dim=DIM, vision_dim=DIM, hidden=16,
                                                       gate_hidden=8, expert_residual=True))
    data = tiny_data(16)
    borrowed = []
    draw = Data.draw

    def traced(self, part, rng, cfg, pools="fit"):
        paired = draw(self, part, rng, cfg, pools)
        # Training's one-modality conversations leave the voice of face-only ones empty; the held-out
        # dialogues carry a voice for every utterance even where their mask hides it.
        rows = paired.mask[:, 1] > 0.5 if part == "fit" else slice(None)
        borrowed.append((part, pools, set(paired.audio[rows, 0].astype(int).tolist())))
        return paired

    monkeypatch.setattr(Data, "draw", traced)
    _, info = fusion.train_one(data, cfg, seed=0, log=lambda *a: None)

    first = ids(data.pools["audio_fold0"])
    second = ids(data.pools["audio_fold1"])
    fit_ids = ids(data.pools["audio_fit"])
    for _, pools, seen in borrowed:
        assert seen, "every draw pairs some utterances with a voice"
        assert seen <= {"fold0": first, "fold1": second, "fit": fit_ids}[pools]
    folds = [(p, pools) for p, pools, _ in borrowed if pools != "fit"]
    # Fold 0's run trains on fold 0 and stops on fold 1; then the other way round.
    assert folds[0] == ("val", "fold1") and ("fit", "fold0") in folds[: folds.index(("val", "fold0"))]
    assert ("fit", "fold1") in folds and ("val", "fold0") in folds
    assert len(info["fold_epochs"]) == len(POOL_FOLDS) and all(1 <= e <= cfg.epochs for e in info["fold_epochs"])
    bound = round(float(np.mean(info["fold_epochs"])))
    final = [p for p, pools, _ in borrowed if pools == "fit" and p == "fit"]
    assert len(final) <= bound and 1 <= info["epoch"] <= bound


def test_without_pool_folds_the_held_out_text_alone_decides():
    cfg = fusion.FusionTrainConfig(epochs=2, patience=2, dialogues_per_batch=4, pool_folds=False,
                                   model=ContextConfig(text_dim=16, audio_dim=DIM, vision_dim=DIM, hidden=16,
                                                       gate_hidden=8, expert_residual=True))
    _, info = fusion.train_one(tiny_data(16), cfg, seed=0, log=lambda *a: None)
    assert "fold_epochs" not in info
