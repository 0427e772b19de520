"""What `merc train text` writes besides the adapter: bench/results/text_adapter.md and the model card.

Apart from the trainer (merc.training.text) so that the training reads as the protocol it runs;
the numbers are the trainer's, this module only lays them out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from merc.models import text_encoder as te
from merc.models import tiers
from merc.training.artifacts import pm, save_markdown


def _soup_dev_wf1(run: Path) -> float:
    """A run's own soup's dev weighted F1 (the sweep's runs recorded it as ``dev_weighted_f1``)."""
    s = json.loads((run / "text_adapter.json").read_text()).get("soup", {})
    return s["dev"]["weighted_f1"] if "dev" in s else s.get("dev_weighted_f1", np.nan)


RUN_TABLE = ["| run | context turns | speaker marks | LoRA rank | lr | epochs | class-weight power | held-out-train wF1 "
             "| dev wF1 | soup dev wF1 | seeds |", "|---|---|---|---|---|---|---|---|---|---|---|"]


def run_rows(runs: list[Path]) -> list[str]:
    """One table row per run folder (its text_adapter.json): recipe, seeds' scores, its own soup's."""
    rows = []
    for r in runs:
        j = json.loads((r / "text_adapter.json").read_text())
        c, seeds, soup_dev = j["config"], j["per_seed"], _soup_dev_wf1(r)
        rows.append(f"| {r.name} ({j['wall_s']:.0f} s, {j['machine'].split(',')[0]}) | {c['context_turns']} | "
                    f"{'yes' if c['context_speakers'] else 'no'} | {c['lora']['rank']} | "
                    f"{c['lr']:g} | {c['epochs']} | {c['class_weight_power']:g} | "
                    f"{pm([s['val_weighted_f1'] for s in seeds])} | {pm([s['dev']['weighted_f1'] for s in seeds])} | "
                    f"{soup_dev:.4f} | {', '.join(str(s['seed']) for s in seeds)} |")
    return rows


def report(r: dict, path: Path, runs: list[Path] = ()) -> str:
    """The report of a training run, or (``runs``) of a soup over runs with the runs' table."""
    base = te.BASES[r["config"].get("base", te.MINILM.key)]
    lines = [
        f"# Text encoder: {base.name} + LoRA adapters on MELD (the conversation before each utterance as context)",
        "",
        f"Command: `{r['command']}`  ",
        f"Wall time: {r['wall_s']:.0f} s on {r['machine']}  ",
        f"Shipped: `{r.get('out', 'model_repository/text_encoder/1')}/adapter.safetensors` version `{r['version']}`",
        "",
        f"Data: MELD train minus 10 % of dialogues ({r['splits']['fit']} utterances) for gradient steps; the held-out 10 %",
        f"({r['splits']['val']}) choose each seed's epoch; MELD dev ({r['splits']['dev']}) is only measured. Figures are the encoder's own training head",
        "(no dialogue context model); the pipeline figure, with the fusion/context model on top, is in `fusion.md`.",
        "",
    ]
    if "per_seed" in r:
        seeds = r["per_seed"]
        ms = lambda k: pm([s["dev"][k] for s in seeds])
        lines += [
            f"| metric (MELD dev, {len(seeds)} seeds) | mean ± std |", "|---|---|",
            f"| weighted F1 | {ms('weighted_f1')} |", f"| macro F1 | {ms('macro_f1')} |", f"| accuracy | {ms('accuracy')} |", "",
            "| seed | epoch | held-out-train wF1 | dev wF1 | train s |", "|---|---|---|---|---|",
            *[f"| {s['seed']} | {s['epoch']} | {s['val_weighted_f1']:.4f} | {s['dev']['weighted_f1']:.4f} | {s['train_s']} |" for s in seeds],
            "",
            *([f"The uniform soup of the seeds' adapters (rank-stacked, heads averaged): held-out-train wF1 "
               f"{r['soup']['val_weighted_f1']:.4f}, dev wF1 {r['soup']['dev']['weighted_f1']:.4f}, macro F1 "
               f"{r['soup']['dev']['macro_f1']:.4f}.", ""] if "soup" in r else []),
        ]
    if runs:
        lines += [
            "Shipped: the uniform soup (rank-stacked LoRA, `merc.models.lora.soup`) of the adapters that three runs of",
            "one recipe shipped; its figure is downstream, text only through the fusion network (`fusion.md`).",
            "Each run's own report and figures (`text_adapter.json`) sit in a folder named after it, beside this",
            "report or under `text_runs/`; a run's adapter is not kept once the soup is made.",
            "",
            "## Runs (3 seeds each; the first ones make the shipped soup; 'soup dev' is a run's own 3-seed soup with averaged heads)",
            "",
            *RUN_TABLE,
            *run_rows(runs),
            "",
        ]
    return save_markdown(path, lines + [f"Configuration: `{json.dumps(r['config'])}`", ""])


MODEL_CARD = """# Model card: MERC text encoder ({version})

- **What**: {base} (base weights from the registry {source}, Apache-2.0)
  with LoRA adapters (rank {rank} as stored) on every attention and feed-forward projection, merged into the
  weights at load time. Each utterance is read with **the conversation just before it** as a second segment:
  the last {turns} utterances, most recent first, each marked as the same or another speaker
  (`merc.pipeline.text_context`; causal: never a later one). The output is the mean of the utterance's own token
  states, L2-normalised ({dim}-d). Only the adapters are committed (`adapter.safetensors`, with a sha256).
- **Data**: MELD train (Friends transcripts; repository GPL-3.0, research use) minus 10 % of its
  dialogues, which pick each seed's epoch. MELD dev is only measured.
- **Training**: `merc train text` — AdamW on the adapters, warm-up + linear decay, class weights
  (1/frequency)^0.3, auxiliary sentiment head; {shipped}.
- **Metrics (MELD dev)**: {metrics} (`bench/results/{report}`); with the fusion/context model on top:
  `bench/results/{fusion_report}`.
- **Intended use**: research and prototyping of emotion in English conversation.
- **Limits**: scripted sitcom dialogue; transcripts from ASR, other languages or domains (contact
  centres, tele-health) will be worse. The adapters derive from MELD: research use.
"""


def model_card(r: dict, seeds: int, soup: list[Path] | None, adapter: Path) -> str:
    """The card for the adapter in ``adapter`` (its config.json gives the rank and context as stored)."""
    if "soup" in r:
        figures = f"soup of {seeds} seeds: weighted F1 {r['soup']['dev']['weighted_f1']:.4f}; the seeds alone " + pm(
            [s["dev"]["weighted_f1"] for s in r["per_seed"]])
    elif "per_seed" in r:
        figures = "weighted F1 " + pm([s["dev"]["weighted_f1"] for s in r["per_seed"]])
    else:
        own = [_soup_dev_wf1(run) for run in soup]
        figures = (f"soup of runs {', '.join(r['runs'])}, whose own 3-seed soups (with their training heads) scored "
                   f"weighted F1 {pm(own)}; the shipped soup is measured downstream")
    meta = json.loads((adapter / "config.json").read_text())
    base = te.adapter_base(meta, adapter)
    shipped = (f"the adapter of seed {meta['trained']['seed']} ships" if "seed" in meta["trained"]
               else "the uniform soup of the seeds' adapters ships")
    return MODEL_CARD.format(version=r["version"], metrics=figures, rank=meta["rank"], turns=meta["context_turns"],
                             base=base.name, source=base.source, dim=base.dim, shipped=shipped,
                             report=_in_tier_results(base.key, "text_adapter.md"),
                             fusion_report=_in_tier_results(base.key, "fusion.md"))


def _in_tier_results(tier: str, name: str) -> str:
    """A report's path under bench/results (merc.models.tiers.results)."""
    return (tiers.results(Path(), tier) / name).as_posix()
