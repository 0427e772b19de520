"""Throughput on this machine: the stack against the models alone and a naive script, in one run.

Needs the local stack and services (`make up`). Measured, for text-only and text + 3 s audio
utterances, all in utterances/s:

  models alone    --clients concurrent clients calling the same models directly on the stack's
                  Triton (text encoder, voice encoder, fusion; dynamic batching on), with inputs
                  already decoded: the ceiling the platform's overhead is measured against
  naive script    one utterance at a time, the same models in-process (decoding included; no
                  Triton, no batching, no pipelining, no Kafka, no store)
  embedded        `merc analyze`'s pipeline, one utterance at a time (bus, join, store in-process)
  stack           --clients concurrent clients through the gateway for --seconds, counting events
                  read back from Kafka (sustained, exactly once: lost = sent - events)

Ratios: stack / models alone (the share of the models' batched capacity the platform delivers;
its overhead is what is missing) and stack / naive. Also Triton's dynamic batching on vs off: the
text encoder called directly by --clients clients, on the stack's Triton and on a second Triton
serving a copy of the model without `dynamic_batching` (started and stopped here, on other ports).

    .venv/bin/python bench/throughput.py --seconds 20 --clients 8
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
from triton_variant import variant_triton  # bench/

from merc.analyze.embedded import EmbeddedPipeline
from merc.analyze.manifest import Utterance
from merc.bus import make_bus
from merc.bus.base import ConsumerSpec
from merc.inference.local import LocalInference
from merc.inference.triton import TritonInference
from merc.media import decode_audio
from merc.pipeline import text_context
from merc.pipeline.modalities import PLUGINS
from merc.runtime.config import Settings, settings
from merc.v1 import common_pb2, encoder_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ["I've been waiting for forty minutes.", "Oh wow, that was quick!", "Can you send me a confirmation?",
             "No, that's not what I asked for.", "Okay, thank you, that helps a lot."]
MIXES = {"text": ("text",), "text+audio": ("text", "audio")}


def per_item_ms(fn, n: int) -> float:
    fn(0)  # warm
    t = time.perf_counter()
    for i in range(n):
        fn(i + 1)
    return (time.perf_counter() - t) * 1000 / n


def fusion_inputs(inference, text_vec, audio_vec, mask) -> dict:
    shapes = inference.input_shapes("fusion")
    k, hidden = shapes["CTX_FUSED"]
    return {"TEXT": text_vec[None], "AUDIO": audio_vec[None], "VISION": np.zeros((1, 128), np.float32),
            "MODALITY_MASK": np.array([mask], np.float32), "QUALITY": np.zeros((1, shapes["QUALITY"][0]), np.float32),
            "SPEAKER": np.zeros((1, 1), np.int64), "CTX_FUSED": np.zeros((1, k, hidden), np.float32),
            "CTX_SPEAKER": np.zeros((1, k), np.int64), "CTX_VALID": np.zeros((1, k), np.float32)}


def in_process(audio: bytes, n: int) -> dict:
    """Per-model per-item times, and the naive script's utterances/s, per mix."""
    cfg = Settings(inference="local", torch_threads=1)
    inference = LocalInference(None, 1)
    text, voice = PLUGINS["text"](inference, cfg), PLUGINS["audio"](inference, cfg)

    def req_text(i: int) -> encoder_pb2.EncodeRequest:
        return encoder_pb2.EncodeRequest(text=SENTENCES[i % len(SENTENCES)])

    req_audio = encoder_pb2.EncodeRequest(audio=encoder_pb2.Audio(data=audio))
    t_vec, a_vec = text.encode(req_text(0)).vector, voice.encode(req_audio).vector
    models = {
        "text_encoder": per_item_ms(lambda i: text.encode(req_text(i)), n),
        "audio_encoder (3 s, with decoding and quality signals)": per_item_ms(lambda i: voice.encode(req_audio), max(5, n // 4)),
        "fusion": per_item_ms(lambda i: inference.infer("fusion", fusion_inputs(inference, t_vec, a_vec, [1, 1, 0])), n),
    }
    out = {"models_ms": models, "mixes": {}}
    for name, mix in MIXES.items():
        def naive(i, mix=mix):
            tv = text.encode(req_text(i)).vector
            av = voice.encode(req_audio).vector if "audio" in mix else np.zeros(128, np.float32)
            inference.infer("fusion", fusion_inputs(inference, tv, av, [1, 1 if "audio" in mix else 0, 0]))

        naive_ms = per_item_ms(naive, n if mix == ("text",) else max(5, n // 4))
        out["mixes"][name] = {"naive_per_s": 1000 / naive_ms}
    return out


def embedded(audio: bytes, n: int, tmp: Path) -> dict:
    (tmp / "a.wav").write_bytes(audio)
    out = {}
    for name, mix in MIXES.items():
        pipeline = EmbeddedPipeline(Settings(inference="local", torch_threads=1))
        try:
            m = n if mix == ("text",) else max(5, n // 4)
            lines = [Utterance(line=i + 1, conversation=f"emb-{name}", utterance=i, speaker="AB"[i % 2],
                               text=SENTENCES[i % len(SENTENCES)], audio=tmp / "a.wav" if "audio" in mix else None)
                     for i in range(m + 1)]
            pipeline.analyze_line(lines[0])
            t = time.perf_counter()
            for u in lines[1:]:
                pipeline.analyze_line(u)
            out[name] = m / (time.perf_counter() - t)
        finally:
            pipeline.close()
    return out


def stack(cfg, gateway: str, audio: bytes, clients: int, seconds: float, mixes: tuple[str, ...] = tuple(MIXES)) -> dict:
    out = {}
    for name in mixes:
        mix = MIXES[name]
        consumer = make_bus(cfg).consumer(ConsumerSpec([cfg.topic("emotions")], group_id=None, from_beginning=False))
        consumer.poll(timeout_ms=200)
        prefix = f"tp-{uuid.uuid4().hex[:6]}"
        sent = [0] * clients
        stop = time.monotonic() + seconds

        def client(k: int, mix=mix, prefix=prefix, stop=stop, sent=sent) -> None:
            stub = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(gateway))
            seq = 0
            while time.monotonic() < stop:
                ref = common_pb2.UtteranceRef(conversation_id=f"{prefix}-{k}", sequence=seq, speaker="AB"[seq % 2])
                req = gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text=SENTENCES[seq % len(SENTENCES)])
                if "audio" in mix:
                    req.audio.data = audio
                stub.AnalyzeUtterance(req, timeout=60)
                seq += 1
                sent[k] = seq

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        start = time.monotonic()
        for t in threads:
            t.start()
        events, last = set(), start
        while any(t.is_alive() for t in threads) or (len(events) < sum(sent) and time.monotonic() - last < 10):
            for m in consumer.poll(timeout_ms=200):
                if m.value is not None:
                    e = events_pb2.EmotionEvent.FromString(m.value)
                    if e.utterance.conversation_id.startswith(prefix):
                        events.add((e.utterance.conversation_id, e.utterance.sequence))
                        last = time.monotonic()
        consumer.close()
        out[name] = {"sent": sum(sent), "events": len(events), "per_s": len(events) / (last - start)}
    return out


def run_clients(client, clients: int) -> float:
    """``client(k)`` on ``clients`` threads at once, k = 0..clients-1; the seconds until all returned."""
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start


def models_alone(cfg, audio: bytes, clients: int, seconds: float) -> dict:
    """Per mix: concurrent clients each running one utterance after another through the models on Triton."""
    wave = decode_audio(audio, "", 0, 0, cfg.max_audio_seconds)
    out = {}
    for name, mix in MIXES.items():
        done = [0] * clients
        stop = time.monotonic() + seconds

        def client(k: int, mix=mix, stop=stop, done=done) -> None:
            triton = TritonInference(cfg.triton_url)
            i = 0
            while time.monotonic() < stop:
                # What the text encoder sends for an utterance without context (TextPlugin.encode).
                text, context = text_context.encoder_inputs(SENTENCES[i % len(SENTENCES)], "", cfg.max_text_chars)
                tv = triton.infer("text_encoder", {"TEXT": np.array([[text.encode()]], dtype=object),
                                                   "CONTEXT": np.array([[context.encode()]], dtype=object)})["EMBEDDING"][0]
                av = np.zeros(128, np.float32)
                if "audio" in mix:
                    av = triton.infer("audio_encoder", {"WAVE": wave[None], "LENGTH": np.array([[len(wave)]], np.int64)})["EMBEDDING"][0]
                triton.infer("fusion", fusion_inputs(triton, tv, av, [1, 1 if "audio" in mix else 0, 0]))
                i += 1
                done[k] = i
            triton.close()

        out[name] = sum(done) / run_clients(client, clients)
    return out


def triton_text_rate(url: str, clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        triton = TritonInference(url)
        i = 0
        while time.monotonic() < stop:
            triton.infer("text_encoder", {"TEXT": np.array([[SENTENCES[i % 5].encode()]], dtype=object)})
            i += 1
            done[k] = i

    return sum(done) / run_clients(client, clients)


def batching(cfg, clients: int, seconds: float) -> dict:
    """The stack's Triton (dynamic batching on) against a second one serving the text encoder without it."""
    on = triton_text_rate(cfg.triton_url, clients, seconds)
    with variant_triton(["text_encoder"], lambda _, pbtxt: re.sub(r"dynamic_batching \{[^}]*\}\n", "", pbtxt)) as url:
        off = triton_text_rate(url, clients, seconds)
    return {"on_per_s": on, "off_per_s": off, "ratio": on / off}


def main() -> None:
    import tempfile

    from latency import media  # bench/latency.py: the same synthetic 3 s voice

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--items", type=int, default=40, help="per-item timings: items per model")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "throughput"))
    args = ap.parse_args()
    cfg = settings()
    audio, _ = media()
    gateway = f"127.0.0.1:{cfg.gateway_port}"
    # The stack first, while nothing else in this process holds the cores.
    st = stack(cfg, gateway, audio, args.clients, args.seconds)
    alone = models_alone(cfg, audio, args.clients, args.seconds)
    bt = batching(cfg, args.clients, args.seconds / 2)
    ip = in_process(audio, args.items)
    with tempfile.TemporaryDirectory() as tmp:
        em = embedded(audio, args.items, Path(tmp))
    report = {"command": f"python bench/throughput.py --seconds {args.seconds:g} --clients {args.clients} --items {args.items}",
              "models_ms": ip["models_ms"], "batching": bt, "mixes": {}}
    for name in MIXES:
        stack_per_s, naive_per_s = st[name]["per_s"], ip["mixes"][name]["naive_per_s"]
        report["mixes"][name] = {"models_alone_per_s": alone[name], "stack_per_s": stack_per_s, "naive_per_s": naive_per_s,
                                 "embedded_per_s": em[name], "stack_vs_models_alone": stack_per_s / alone[name],
                                 "stack_vs_naive": stack_per_s / naive_per_s,
                                 "sent": st[name]["sent"], "events": st[name]["events"], "lost": st[name]["sent"] - st[name]["events"]}
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    md = ["# Throughput: the stack against the models alone and a naive script", "",
          f"2-core CPU machine, local stack; {args.clients} concurrent clients for {args.seconds:g} s per mix; "
          "audio = 3 s at 16 kHz. All utterances/s.", "",
          "| mix | models alone (Triton, batched) | stack (events read back) | naive script | embedded | stack / models alone | stack / naive | lost |",
          "|---|---|---|---|---|---|---|---|"]
    for name, r in report["mixes"].items():
        md.append(f"| {name} | {r['models_alone_per_s']:.1f} | {r['stack_per_s']:.1f} | {r['naive_per_s']:.1f} | {r['embedded_per_s']:.1f} | "
                  f"{r['stack_vs_models_alone']:.2f} | {r['stack_vs_naive']:.2f} | {r['lost']} |")
    md += ["", "Per-item model times (in-process, one item, 1 thread): "
           + ", ".join(f"{k} {v:.1f} ms" for k, v in report["models_ms"].items()) + ".", "",
           f"Triton dynamic batching, text encoder called directly by {args.clients} clients: on {bt['on_per_s']:.1f}/s, "
           f"off {bt['off_per_s']:.1f}/s, ratio {bt['ratio']:.2f}.", "",
           "Models alone: the same clients call the models on the stack's Triton directly, inputs already decoded "
           "(no gateway, encoders, Kafka, store); what the stack delivers short of it is the platform's overhead. "
           "The naive script and embedded run one utterance at a time in-process.", "",
           f"Command: `{report['command']}`"]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
