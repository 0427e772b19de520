"""The fusion recipe sweep chooses on held-out train dialogues, never on dev."""

from merc.training.fusion_sweep import report


def run(ema, seed, val, dev):
    return {"ema": ema, "seed": seed, "epoch": 3, "val_weighted_f1": val, "dev": {"text": dev, "text+audio+vision": dev},
            "lone": {"audio": 0.5, "vision": 0.5}}


def test_the_recipe_with_the_best_held_out_score_is_chosen_even_when_dev_prefers_another(tmp_path):
    runs = [run(0.0, s, 0.60, 0.70) for s in range(2)] + [run(0.99, s, 0.62, 0.55) for s in range(2)]
    text = report(runs, "cmd", tmp_path / "sweep.md")
    assert "**decay 0.99**" in text
    assert "| off | 0.6000 ± 0.0000 | 3, 3 | 0.7000 ± 0.0000 |" in text
    assert (tmp_path / "sweep.md").read_text() == text
