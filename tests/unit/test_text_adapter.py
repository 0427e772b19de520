"""The text trainer's pieces on tiny inputs: pairs with causal context, and the seed soup."""

import pytest
import torch

from merc.data.meld import Dialogue, Utterance
from merc.models import text_encoder as te
from merc.training import text

torch.set_num_threads(1)


def test_each_utterance_gets_the_conversation_before_it_as_context():
    u = lambda d, i, spk, t: Utterance(d, i, spk, {"A": 0, "B": 1}[spk], t, 0, 1)
    a = [u("a", 0, "A", "Hi."), u("a", 1, "B", "Hello!"), u("a", 2, "A", "How are you?"),
         u("a", 3, "B", "Fine."), u("a", 4, "A", "Good.")]
    ex = text.examples([Dialogue("a", tuple(a)), Dialogue("b", (u("b", 0, "A", "Bye."),))], turns=3, speakers=True)
    assert ex.texts == ["Hi.", "Hello!", "How are you?", "Fine.", "Good.", "Bye."]
    # Most recent first, at most three, marked relative to the speaker; never a later utterance or
    # another dialogue's.
    assert ex.contexts == ["", "(other) Hi.", "(other) Hello! | (same) Hi.",
                           "(other) How are you? | (same) Hello! | (other) Hi.",
                           "(other) Fine. | (same) How are you? | (other) Hello!", ""]
    plain = text.examples([Dialogue("a", tuple(a[:2]))], turns=1, speakers=False)
    assert plain.contexts == ["", "Hi."]


def test_runs_of_different_recipes_do_not_make_a_soup(tmp_path):
    for name, turns in (("a", 3), ("b", 1)):
        (tmp_path / name / "1").mkdir(parents=True)
        meta = {**text.LoRAConfig().to_dict(), "context_turns": turns, "context_speakers": True,
                "train_max_length": 160, "trained": {}}
        (tmp_path / name / "1" / "config.json").write_text(text.json.dumps(meta))
    with pytest.raises(ValueError, match="one recipe"):
        text.soup_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "out")


def test_an_adapter_trained_on_another_context_format_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"context_turns": 1, "context_speakers": false}')
    with pytest.raises(ValueError, match="retrain it"):
        te.TextEncoder(adapter=tmp_path)


def test_the_seed_soup_is_one_servable_adapter_with_averaged_heads():
    cfg = text.TextTrainConfig()
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        m = text.AdaptedEncoder(te.load_base()[1], cfg)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if "lora_b" in name:
                    p.normal_(std=0.01)
        models.append(m.eval())
    soup, lora = text.seed_soup(models, cfg)
    assert lora.rank == 2 * cfg.lora.rank
    assert torch.allclose(soup.head[2].weight, (models[0].head[2].weight + models[1].head[2].weight) / 2)
    tokenizer = te.load_base()[0]
    batch = te.tokenize(tokenizer, ["Really?"], ["I won!"], 32)
    with torch.no_grad():
        logits, _ = soup(batch)
    assert torch.isfinite(logits).all()


def test_seeds_trained_in_parallel_processes_ship_the_same_adapter(tmp_path, monkeypatch):
    # --jobs trains each seed in its own (spawned) process: the same arithmetic, so the same bytes.
    said = ["I got the job!", "No way!", "Yes, I start Monday.", "That's amazing.", "I'm so scared though.", "Why?"]
    dialogues = [Dialogue(f"d{d}", tuple(Utterance(f"d{d}", i, "AB"[i % 2], i % 2, t, (d + i) % 7, (d + i) % 3)
                                         for i, t in enumerate(said))) for d in range(10)]
    monkeypatch.setattr(text, "load_split", lambda split: dialogues if split == "train" else dialogues[:2])
    cfg = text.TextTrainConfig(epochs=1, batch_size=16)
    for name, jobs in (("one", 1), ("two", 2)):
        text.train(cfg, 2, tmp_path / name / "1", log=lambda *_: None, jobs=jobs)
    assert (tmp_path / "one" / "1" / "adapter.safetensors").read_bytes() == (
        tmp_path / "two" / "1" / "adapter.safetensors").read_bytes()
