"""PyTorch vs ONNX Runtime on CPU, per served model, in-process, one thread each.

Each model's tensor maths (merc.models.graphs) is exported by merc.models.onnx_export into a
temporary folder from the committed weights, then called at batch 1 and 8 by torch (eager,
inference mode) and by ONNX Runtime (CPU provider, all graph optimisations). The two candidates
alternate call block by call block, round after round, so whatever else runs on the machine slows
both alike; the report gives each one's median over every call of every round, their ratio
(torch / ORT: above 1, ORT is faster), and the largest absolute difference of their outputs.

Inputs: face 48x48 crops; audio the log-mel of 3 s (the CNN only: trimming and the spectrogram
stay in Python either way); fusion random features with a half-full context; text an utterance
with its formatted context, tokenised (tokenising stays in Python either way).

    .venv/bin/python bench/onnx_vs_torch.py --rounds 7 --calls 15
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from merc.models import onnx_export
from merc.models.encoders import AudioEmotionEncoder, FaceEmotionEncoder
from merc.models.graph_runner import session_options
from merc.models.graphs import AudioGraph, FaceGraph, FusionGraph, TextGraph
from merc.models.predictor import FusionPredictor
from merc.models.text_encoder import TextEncoder, tokenize

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "model_repository"
RESULTS = REPO / "bench" / "results"
BATCHES = (1, 8)
AUDIO_FRAMES = 301  # 3 s at a 10 ms hop
# Below this at batch 1 (one utterance, the live case) a second runtime is not worth shipping.
SHIP_RATIO = 1.2
# A typical MELD-like turn and the context merc.pipeline.text_context formats before it.
UTTERANCE = "Oh my God, you're not going to believe what just happened to me on the way over here!"
CONTEXT = ("[same] I know, I know, I'm late again, I'm sorry. | [other] Where have you been? We've been waiting "
           "for almost an hour and the food is cold. | [other] Did you at least bring the tickets for tonight?")


def _models(tmp: Path) -> dict:
    """name -> (torch graph, exported path, inputs per batch size)."""
    face = FaceEmotionEncoder(MODELS / "face_encoder" / "1")
    audio = AudioEmotionEncoder(MODELS / "audio_encoder" / "1")
    fusion = FusionPredictor(MODELS / "fusion" / "1")
    text = TextEncoder.from_repository(MODELS / "text_encoder" / "1")
    gen = torch.Generator().manual_seed(0)

    def text_inputs(b: int):
        t = tokenize(text.tokenizer, [UTTERANCE] * b, [CONTEXT] * b, text.max_length)
        return (t["input_ids"], t["attention_mask"], t["token_type_ids"])

    return {
        "face_encoder": (FaceGraph(face.model), onnx_export.export_face(face.model, tmp / "face.onnx", face.version),
                         {b: (torch.randint(0, 256, (b, 48, 48), dtype=torch.uint8, generator=gen),) for b in BATCHES}),
        "audio_encoder": (AudioGraph(audio.model), onnx_export.export_audio(audio.model, tmp / "audio.onnx", audio.version),
                          {b: (torch.randn(b, audio.model.cfg.n_mels, AUDIO_FRAMES, generator=gen),) for b in BATCHES}),
        "fusion": (FusionGraph(fusion.model), onnx_export.export_fusion(fusion.model, tmp / "fusion.onnx", fusion.version),
                   {b: onnx_export.fusion_example(fusion.model, b) for b in BATCHES}),
        "text_encoder": (TextGraph(text.model),
                         onnx_export.export_text(text.model, text.tokenizer, tmp / "text.onnx", text.version),
                         {b: text_inputs(b) for b in BATCHES}),
    }


def _timed(fn, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def measure(rounds: int, calls: int) -> dict:
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(Path(tmp))
        for name, (graph, path, inputs) in models.items():
            graph.eval()
            session = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
            for b, xs in inputs.items():
                feeds = {n: x.numpy() for n, x in zip(graph.INPUTS, xs, strict=True)}
                with torch.inference_mode():
                    ref = [t.numpy() for t in graph(*xs)]
                got = session.run(None, feeds)
                diff = max(float(np.abs(r - g).max()) for r, g in zip(ref, got, strict=True))

                def run_torch(graph=graph, xs=xs):
                    with torch.inference_mode():
                        graph(*xs)

                def run_ort(session=session, feeds=feeds):
                    session.run(None, feeds)

                run_torch(), run_ort()  # warm (allocators, ORT's first-run planning)
                times = {"torch": [], "onnxruntime": []}
                for _ in range(rounds):
                    times["torch"] += _timed(run_torch, calls)
                    times["onnxruntime"] += _timed(run_ort, calls)
                t, o = statistics.median(times["torch"]), statistics.median(times["onnxruntime"])
                key = f"{name}/b{b}"
                results[key] = {"model": name, "batch": b, "torch_ms": round(t, 3), "onnxruntime_ms": round(o, 3),
                                "ratio": round(t / o, 2), "max_abs_diff": diff,
                                "shape": {n: list(x.shape) for n, x in zip(graph.INPUTS, xs, strict=True)}}
                print(f"{key}: torch {t:.3f} ms, ORT {o:.3f} ms, x{t / o:.2f}, max|diff| {diff:.2e}", flush=True)
    return results


def report(results: dict, rounds: int, calls: int, command: str) -> str:
    lines = [
        "# ONNX Runtime vs PyTorch, CPU, one thread",
        "",
        f"{platform.processor() or platform.machine()} 2-core CPU machine shared with other work; torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}. In-process, `torch.set_num_threads(1)` and ORT intra/inter-op threads 1. "
        f"Per model and batch size: {rounds} rounds, each {calls} torch calls then {calls} ORT calls (interleaved, so "
        "contention hits both alike); medians over all calls. Ratio = torch / ORT (above 1: ORT faster).",
        "",
        "| model | batch | input | torch ms | ORT ms | ratio | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        shape = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in r["shape"].items() if n in ("FACES", "MEL", "TEXT", "INPUT_IDS"))
        lines.append(f"| {r['model']} | {r['batch']} | {shape} | {r['torch_ms']:.2f} | {r['onnxruntime_ms']:.2f} | "
                     f"{r['ratio']:.2f} | {r['max_abs_diff']:.1e} |")
    wins = sorted({r["model"] for r in results.values() if r["batch"] == 1 and r["ratio"] >= SHIP_RATIO})
    rest = sorted({r["model"] for r in results.values()} - set(wins))
    lines += ["", f"Shipped where ORT is at least {SHIP_RATIO}x faster at batch 1: {', '.join(wins) or 'none'}"
              f"{' (not: ' + ', '.join(rest) + ')' if rest else ''}. `merc onnx` writes their exports next to the "
              "weights (`make install`, the Triton image's build); merc.models.graph_runner serves an export when "
              "it is there, torch otherwise.", "", "Only the exported tensor maths is timed: tokenising (text), trimming and the log-mel spectrogram "
              "(audio) and calibration (fusion) run in Python either way.", "", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=15, help="calls per candidate per round")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    results = measure(args.rounds, args.calls)
    command = f"python bench/onnx_vs_torch.py --rounds {args.rounds} --calls {args.calls}"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "onnx.json").write_text(json.dumps({"command": command, "rounds": args.rounds, "calls": args.calls,
                                                        "threads": 1, "interleaved": True, "results": results}, indent=2) + "\n")
    (args.results / "onnx.md").write_text(report(results, args.rounds, args.calls, command))


if __name__ == "__main__":
    main()
