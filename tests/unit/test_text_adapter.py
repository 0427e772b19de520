"""The text trainer's pieces on tiny inputs: pairs with causal context, and the seed soup."""

import torch

from merc.data.meld import Dialogue, Utterance
from merc.models import text_encoder as te
from merc.training import text

torch.set_num_threads(1)


def test_each_utterance_gets_the_previous_one_of_its_dialogue_as_context():
    u = lambda d, i, t: Utterance(d, i, "A", 0, t, 0, 1)  # noqa: E731
    ex = text.examples([Dialogue("a", (u("a", 0, "Hi."), u("a", 1, "Hello!"))), Dialogue("b", (u("b", 0, "Bye."),))])
    assert ex.texts == ["Hi.", "Hello!", "Bye."]
    assert ex.contexts == ["", "Hi.", ""]  # never a later utterance, never another dialogue's


def test_the_seed_soup_is_one_servable_adapter_with_averaged_heads():
    cfg = text.TextTrainConfig()
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        m = text.AdaptedMiniLM(te.load_base()[1], cfg)
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
