"""CPU time per utterance, process by process, while the stack sustains text utterances.

Needs the local stack and services (`make up`), on this machine (it reads /proc). --clients
concurrent clients send text utterances through the gateway for --seconds (bench/throughput.py's
load, events read back from Kafka); each process's CPU seconds over that window, divided by the
events, says what every utterance costs where: the models (Triton's python-backend stubs), the
platform's services, Kafka and PostgreSQL. On a machine whose cores are all busy, CPU per utterance
is what bounds throughput.

    .venv/bin/python bench/cpu_profile.py --seconds 20 --clients 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from latency import media
from throughput import stack

from merc.runtime.config import settings

TICK = os.sysconf("SC_CLK_TCK")
MODELS = "Triton python-backend stubs (the models)"
CLIENTS = "this benchmark's clients"


def role(pid: str, cmdline: str) -> str | None:
    """What a process is in the local stack (deploy/local), or None."""
    if "triton_python_backend_stub" in cmdline:
        return MODELS
    if "tritonserver" in cmdline:
        return "tritonserver"
    if "java" in cmdline and "kafka" in cmdline:
        return "Kafka broker"
    if "postgres" in cmdline:
        return "PostgreSQL"
    for service in ("encoder", "fusion", "gateway"):
        if f"merc.{service}" in cmdline:
            if service != "encoder":
                return service
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            modality = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"MERC_ENCODER_MODALITY=")), "?")
            return f"encoder ({modality})"
    if pid == str(os.getpid()):
        return CLIENTS
    return None


def cpu_seconds() -> dict[str, float]:
    out: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            name = role(pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile
            continue
        if name is not None:
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_profile"))
    args = ap.parse_args()
    cfg = settings()
    audio, _ = media()
    before, start = cpu_seconds(), time.monotonic()
    run = stack(cfg, f"127.0.0.1:{cfg.gateway_port}", audio, args.clients, args.seconds, mixes=("text",))["text"]
    after, wall = cpu_seconds(), time.monotonic() - start
    # A process that exited meanwhile (a PostgreSQL backend) takes its CPU time along: such a role can
    # come out below zero. Roles under 0.05 ms (idle encoders of other modalities) are left out.
    per = {k: ms for k in after if (ms := (after[k] - before.get(k, 0.0)) * 1000 / run["events"]) >= 0.05}
    report = {"command": f"python bench/cpu_profile.py --seconds {args.seconds:g} --clients {args.clients}",
              "events": run["events"], "lost": run["sent"] - run["events"], "per_s": run["per_s"], "wall_s": wall,
              "cpu_ms_per_utterance": dict(sorted(per.items(), key=lambda kv: -kv[1]))}
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    total = sum(per.values())
    md = ["# CPU per utterance, by process", "",
          f"2-core CPU machine, local stack; {args.clients} clients sending text utterances through the gateway for "
          f"{args.seconds:g} s: {run['events']} events read back ({run['per_s']:.1f}/s, {report['lost']} lost). "
          "CPU time of each process over the run, per event.", "",
          "| process | CPU ms per utterance | share |", "|---|---|---|"]
    md += [f"| {k} | {v:.2f} | {v / total:.0%} |" for k, v in report["cpu_ms_per_utterance"].items()]
    platform = total - per.get(MODELS, 0.0) - per.get(CLIENTS, 0.0)
    md += [f"| all | {total:.2f} | |", "", f"The platform (every process but the models' and this benchmark's clients): "
           f"{platform:.2f} ms, {platform / per.get(MODELS, float('nan')):.1f}x the models'.", "", f"Command: `{report['command']}`"]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
