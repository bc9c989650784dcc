"""`lmtune export`, `lmtune chat`, `lmtune serve` and `lmtune server`: the tuned model out of lmtune's hands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmtune.cli.app import _quiet_libraries, app, out, say


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run directory (runs/<name>).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write (must be new or empty).")],
    format: Annotated[str, typer.Option(help="hf (merged model), adapter (PEFT dir) or gguf (llama.cpp).")] = "hf",
    dtype: Annotated[str | None, typer.Option(help="hf: bf16, fp16 or fp32 (default: as trained).")] = None,
    max_shard_size: Annotated[str, typer.Option(help="hf: largest safetensors shard, e.g. 2GB.")] = "2GB",
    quant: Annotated[str, typer.Option(help="gguf: f16, bf16 or q8_0.")] = "f16",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Export a run's tuned model: merged Hugging Face model, PEFT adapter, or GGUF for llama.cpp/Ollama."""
    _quiet_libraries()
    from lmtune.ship import export_model

    result = export_model(
        run,
        out_dir,
        format=format,
        dtype=dtype,
        max_shard_size=max_shard_size,
        quant=quant,
        overwrite=overwrite,
        report=say,
    )
    for name, size in result.files.items():
        out.print(f"{size / 1e6:10.2f} MB  {name}", highlight=False, markup=False)
    out.print(f"{result.out} ({result.format}, {result.total_bytes / 1e6:.2f} MB)", highlight=False, markup=False)


@app.command()
def serve(
    sources: Annotated[list[Path], typer.Argument(help="Run directories or model directories to serve.")],
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="LMTUNE_API_KEY", help="Require `Authorization: Bearer KEY`.")
    ] = None,
    max_queue: Annotated[int, typer.Option(help="Requests waiting at most; more get 503.")] = 64,
    max_batch: Annotated[int, typer.Option(help="Requests generated together at most.")] = 16,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 1024,
    device: Annotated[str, typer.Option(help="auto (cuda when there is one), cpu, cuda, cuda:1, ...")] = "auto",
) -> None:
    """Serve runs behind an OpenAI-compatible API (LoRA runs on one base share one copy of it)."""
    _quiet_libraries()
    from lmtune.serve import serve as run_server

    run_server(
        sources,
        host=host,
        port=port,
        api_key=api_key,
        max_queue=max_queue,
        max_batch=max_batch,
        max_tokens=max_tokens,
        device=device,
        report=say,
    )


@app.command()
def server(
    store: Annotated[Path, typer.Option("--dir", help="Store directory: files, jobs, runs (created if new).")],
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="LMTUNE_API_KEY", help="Require `Authorization: Bearer KEY` on every route.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Jobs trained at the same time (each in its own process).")] = 1,
    max_upload_mb: Annotated[int, typer.Option(help="Largest file upload, in MB.")] = 64,
    device: Annotated[
        str, typer.Option(help="Where the fine-tuned models answer chat: cpu, cuda, cuda:1, ...")
    ] = "cpu",
) -> None:
    """A local OpenAI-compatible fine-tuning service (files, jobs, events, checkpoints, chat) and its web studio."""
    _quiet_libraries()
    from lmtune.service import run_service

    run_service(store, host=host, port=port, api_key=api_key, workers=workers,
                max_upload_bytes=max_upload_mb << 20, device=device, report=say)  # fmt: skip


@app.command()
def chat(
    source: Annotated[Path, typer.Argument(help="Run directory or model directory.")],
    system: Annotated[str | None, typer.Option(help="System prompt for the conversation.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy decoding.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (when temperature > 0).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Chat with a run in the terminal (answers stream; /reset, /save FILE, /exit). Piped input: one answer a line."""
    _quiet_libraries()
    import sys

    from lmtune.ship.chat import COMMANDS, open_chat, run_command

    session = open_chat(
        source, report=say, system=system, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    interactive = sys.stdin.isatty()
    if interactive:
        say(f"chatting with {source} ({COMMANDS})")

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    while True:
        try:
            line = input("you> " if interactive else "")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt ends the chat quietly
            show("\n" if interactive else "")
            break
        if not line.strip():
            continue
        if line.startswith("/"):
            action, message = run_command(session, line)
            if action == "exit":
                break
            say(message, warning=action == "error")
            continue
        if interactive:
            show("bot> ")
        session.ask(line, on_text=show)
        show("\n")
