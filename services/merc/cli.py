"""The `merc` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from merc import progress

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
MAX_SPEAKERS = 50  # analyze --speakers: more people than this in one recording is a typing slip


def _alone(r: dict) -> str:
    """What each modality predicted on its own, a line each: "text joy 0.81"."""
    out = []
    for m in r["modalities"]:
        p = r.get("posteriors", {}).get(m)
        if p:
            top = max(p, key=p.get)
            out.append(f"{m} {top} {p[top]:.2f}")
    return "\n".join(out) or "—"


def _print_table(rows: list[dict], explain: bool = False) -> None:
    import shutil

    from rich.console import Console
    from rich.table import Table

    conversations = sorted({r["conversation"] for r in rows if r.get("conversation")})
    table = Table(title=f"MERC emotion events: {', '.join(conversations)}", title_justify="left")
    notes: list[str] = []  # under the table, marked * in it
    columns = ["#", "speaker", "emotion", "conf", "prediction set", "sentiment", "modalities", "valence/arousal"]
    if explain:
        columns.insert(7, "each alone")
    for col in columns:
        table.add_column(col, no_wrap=col not in ("prediction set", "modalities", "each alone"))
    for r in rows:
        if "line" in r:
            where = f"line {r['line']}"
        else:
            where = f"{r.get('conversation', '')}#{r.get('utterance', '?')}" if len(conversations) > 1 else str(r.get("utterance", "?"))
        if r.get("label") is None:
            table.add_row(where, r.get("speaker", ""), "[red]error[/red]", "", r.get("error", ""), *[""] * (len(columns) - 5))
            continue
        if r.get("notes"):
            notes.extend(f"{where}: {n}" for n in r["notes"])
            where += " *"
        mood = r["mood"]["speaker"]
        mods = " ".join(f"{m}:{r['weights'][m]:.2f}" for m in r["modalities"]) + (" [yellow]degraded[/yellow]" if r["degraded"] else "")
        cells = [where, r["speaker"], r["label"], f"{r['confidence']:.2f}", " ".join(r["prediction_set"]), r["sentiment"], mods,
                 f"{mood['valence']:+.2f} / {mood['arousal']:+.2f}"]
        if explain:
            cells.insert(7, _alone(r))
        table.add_row(*cells)
    # Piped output has no terminal width; a table is still wanted whole.
    width = shutil.get_terminal_size((140, 24)).columns
    console = Console(width=max(width, 120))
    console.print(table)
    for n in notes:
        console.print(f"* {n}", highlight=False)


def _line_count(path: str) -> int | None:
    """Lines of a manifest (a progress bar's total); None for a recording, whose utterances are found as it goes."""
    from merc.analyze import manifest
    from merc.analyze.segment import is_media_file

    if is_media_file(Path(path)):
        return None
    return sum(1 for _, line in manifest.lines(Path(path)) if line is None or line.strip())


def cmd_analyze(args: argparse.Namespace) -> int:
    if args.manifest == "-":
        import tempfile

        # Spooled to a file (read twice: the progress total, then the run); media paths stay relative to
        # the working directory, and conversations without an id are named after "stdin".
        with tempfile.TemporaryDirectory(prefix="merc-stdin-") as spool:
            path = Path(spool) / "stdin.jsonl"
            with path.open("w", encoding="utf-8") as f:
                for line in sys.stdin:
                    f.write(line)
            return _analyze(args, str(path), Path.cwd())
    return _analyze(args, args.manifest, None)


def _analyze(args: argparse.Namespace, manifest: str, base: Path | None) -> int:
    if not Path(manifest).is_file():
        print(f"merc analyze: no such file: {manifest} (give a JSON-lines manifest, an audio/video file, or - for stdin)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.speakers is not None and not 1 <= args.speakers <= MAX_SPEAKERS:
        print(f"merc analyze: --speakers must be 1 to {MAX_SPEAKERS}, not {args.speakers}", file=sys.stderr)
        return EXIT_USAGE
    if args.html and args.remote:
        print("merc analyze: --html draws the events of the embedded mode; drop --remote (the gateway serves the same page live)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        total = _line_count(manifest)
        out = open(args.out, "w", encoding="utf-8") if args.out else None  # closed in the finally below
    except OSError as e:
        print(f"merc analyze: cannot {'read' if e.filename == manifest else 'write'} {e.filename}: {e.strerror}", file=sys.stderr)
        return EXIT_USAGE
    table = not args.json and (not args.out or args.table)
    from merc.analyze.remote import GatewayError

    rows, events, failed = [], [], 0  # rows for the table, events for --html
    said: dict[tuple[str, int], str] = {}  # --html: what each utterance said (the report shows it; events carry no text)
    pipeline = results = None
    try:
        if args.remote:
            from merc.analyze.remote import analyze_remote, remote_settings

            results = analyze_remote(manifest, args.remote, timeout_s=args.timeout, cfg=remote_settings(args.api_key), base=base,
                                     speakers=args.speakers)
        else:
            from merc.analyze.embedded import EmbeddedPipeline
            from merc.runtime.config import Settings

            cfg = Settings(inference="local", **({"torch_threads": args.threads} if args.threads else {}))
            pipeline = EmbeddedPipeline(cfg, db_path=args.db)
            results = pipeline.analyze(manifest, base=base, speakers=args.speakers)
        # Each line's record is written as it is produced: a run that stops early keeps every line before.
        for result in progress.steps(results, "analysing utterances", total):
            for err in result.errors:
                print(f"merc analyze: {args.manifest}: {err}", file=sys.stderr)
            row = result.to_json()
            failed += row.get("label") is None
            if result.event is not None:
                events.append(result.event)
                if args.html and result.utterance is not None and result.utterance.text:
                    said[(result.utterance.conversation, result.utterance.utterance)] = result.utterance.text
            if out is not None:
                out.write(json.dumps(row) + "\n")
                out.flush()
            if args.json:
                print(json.dumps(row), flush=True)
            elif table:
                rows.append(row)
    except GatewayError as e:
        print(f"merc analyze: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE if e.unreachable else EXIT_USAGE
    finally:
        if results is not None:
            results.close()
        if pipeline is not None:
            pipeline.close()
        if out is not None:
            out.close()
        if args.html:
            from merc.analyze import timeline

            Path(args.html).write_text(timeline.report(events, title=Path(args.manifest).name if args.manifest != "-" else "stdin",
                                                       failed_lines=failed, texts=said), encoding="utf-8")
    if table:
        _print_table(rows, explain=args.explain)
    return EXIT_PARTIAL if failed else EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    from merc.runtime.config import settings
    from merc.store import Store

    store = Store(args.url or settings().database_url)
    store.migrate()
    print(f"schema up to date at {store.engine.url.render_as_string(hide_password=True)}")
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    from merc.runtime.security import hash_key, new_key

    key = new_key()
    print(f"API key for tenant {args.tenant!r} (give it to the client; it is not stored anywhere):\n  {key}")
    print(f"Add this entry to MERC_API_KEYS (comma-separated) or a line of MERC_API_KEYS_FILE:\n  {args.tenant}:{hash_key(key)}")
    return EXIT_OK


def cmd_retention(args: argparse.Namespace) -> int:
    from merc.bus import make_bus
    from merc.runtime import privacy
    from merc.runtime.config import settings
    from merc.store import Store

    cfg = settings()
    if args.days is not None:
        cfg = cfg.model_copy(update={"retention_days": args.days})
    if cfg.retention_days <= 0:
        print("merc retention: no retention age set (MERC_RETENTION_DAYS or --days); nothing deleted", file=sys.stderr)
        return EXIT_USAGE
    store = Store(args.url or cfg.database_url)
    producer = make_bus(cfg).producer()
    try:
        gone = privacy.expire(store, producer, cfg)
    finally:
        producer.close()
        store.close()
    print(f"merc retention: erased {len(gone)} conversation(s) older than {cfg.retention_days:g} days")
    return EXIT_OK


def _needs_data(run) -> int:
    from merc.data.meld import DataUnavailable

    try:
        return run() or EXIT_OK
    except DataUnavailable as e:
        print(f"merc: {e}", file=sys.stderr)
        return EXIT_USAGE


def cmd_train(args: argparse.Namespace) -> int:
    import importlib

    # Each trainer is a module with main(argv) and its own --help.
    return _needs_data(lambda: importlib.import_module(f"merc.training.{args.model}").main(args.rest))


def cmd_models(args: argparse.Namespace) -> int:
    from merc.evaluation import evaluate

    try:
        return _needs_data(lambda: evaluate.main(args.command, args.rest))
    except (ValueError, FileExistsError) as e:
        print(f"merc {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE


def cmd_onnx(args: argparse.Namespace) -> int:
    from merc.inference.local import model_repository
    from merc.models.onnx_export import export_repository

    for path in export_repository(args.repository or model_repository()):
        print(f"wrote {path}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import importlib

    importlib.import_module(f"merc.{args.service}.__main__").main()
    return EXIT_OK


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("merc")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="merc", description="Multimodal emotion recognition in conversation.",
                                epilog=f"Exit status: {EXIT_OK} done; {EXIT_PARTIAL} done in part (analyze: some lines got no event); "
                                f"{EXIT_USAGE} usage error; {EXIT_UNAVAILABLE} a service it needs could not be reached. "
                                "Each command's --help says more.")
    p.add_argument("--version", action="version", version=f"merc {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="analyse a conversation manifest (JSON lines) or a recording; print one event per utterance",
                       epilog=f"Exit status: {EXIT_OK} every line produced an event; {EXIT_PARTIAL} some did not (each reported on "
                       f"stderr as 'line N: ...'; an error that stops the run also exits {EXIT_PARTIAL}, --out and --html keeping the lines "
                       f"before); {EXIT_USAGE} usage error, unreadable manifest, unwritable --out, or the gateway refused the API key; "
                       f"{EXIT_UNAVAILABLE} --remote: the gateway could not be reached (nothing was analysed).")
    a.add_argument("manifest", help="JSON-lines manifest (media paths relative to it), - to read it from stdin (media paths "
                   "relative to the working directory), or a bare audio/video file: its utterances are found by voice activity")
    a.add_argument("--out", help="write the events as JSON lines to this file")
    a.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    a.add_argument("--table", action="store_true", help="print the table even with --out")
    a.add_argument("--explain", action="store_true", help="the table shows what each modality predicted on its own (its "
                   "calibrated posterior's top label), beside the fused result; --json always carries them as 'posteriors'")
    a.add_argument("--html", metavar="REPORT.html", help="embedded mode: also write the timeline page (one self-contained HTML file, "
                   "the same view the gateway serves live, plus what each utterance said, from the manifest)")
    a.add_argument("--remote", metavar="GATEWAY", help="send through a running gateway (host:port); the events come back on the same "
                   "stream (StreamConversation), so only the gateway needs to be reachable")
    a.add_argument("--api-key", default=None, help="--remote: the API key (default MERC_API_KEY); the key names the tenant")
    a.add_argument("--db", help="embedded mode: keep the SQLite database at this path")
    a.add_argument("--threads", type=int, help="torch threads (embedded mode; default MERC_TORCH_THREADS, 2)")
    a.add_argument("--speakers", type=int, metavar="N", help="a bare recording: how many people speak in it, when known (without "
                   "it, the number is found from their voices, less accurately)")
    a.add_argument("--timeout", type=float, default=60.0, help="--remote: seconds to wait for the events once every line is sent")
    a.set_defaults(func=cmd_analyze)

    d = sub.add_parser("db", help="database schema")
    d.add_argument("action", choices=["upgrade"])
    d.add_argument("--url", help="SQLAlchemy URL (default: MERC_DATABASE_URL)")
    d.set_defaults(func=cmd_db)

    k = sub.add_parser("keys", help="API keys: `merc keys new TENANT` prints a new key and the hashed entry to configure")
    k.add_argument("action", choices=["new"])
    k.add_argument("tenant")
    k.set_defaults(func=cmd_keys)

    r = sub.add_parser("retention", help="erase conversations older than MERC_RETENTION_DAYS (Kafka tombstones, then rows); run it on a schedule")
    r.add_argument("--days", type=float, help="override MERC_RETENTION_DAYS")
    r.add_argument("--url", help="SQLAlchemy URL (default: MERC_DATABASE_URL)")
    r.set_defaults(func=cmd_retention)

    t = sub.add_parser("train", help="train a model: `merc train text|audio|vision|fusion [--help]` (fusion last: it reads the others)")
    t.add_argument("model", choices=["text", "audio", "vision", "fusion"])
    t.add_argument("rest", nargs=argparse.REMAINDER)
    t.set_defaults(func=cmd_train)

    for name, text in (("eval", "measure every shipped model on its development data; report + PNGs in bench/results"),
                       ("calibrate", "refit the fusion model's per-pattern temperature and conformal sets (--coverage)"),
                       ("export", "copy model_repository/ (checksums verified) to a folder Triton can serve")):
        e = sub.add_parser(name, help=text, add_help=False)
        e.add_argument("rest", nargs=argparse.REMAINDER)
        e.set_defaults(func=cmd_models)

    o = sub.add_parser("onnx", help="export each model's tensor maths to model.onnx in its version folder: the models "
                       "then run on ONNX Runtime, embedded and in Triton (faster on CPU: bench/results/onnx.md)")
    o.add_argument("--repository", type=Path, help="default: the checkout's model_repository/")
    o.set_defaults(func=cmd_onnx)

    s = sub.add_parser("serve", help="run one service in the foreground")
    s.add_argument("service", choices=["encoder", "fusion", "gateway"])
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Commands that hand their arguments on (train, eval, ...) parse them, --help included, themselves.
    args, unknown = parser.parse_known_args(argv)
    if unknown and not hasattr(args, "rest"):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:
        args.rest = unknown + args.rest
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
