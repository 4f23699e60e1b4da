"""BENCHMARKS.md: each benchmark owns one marked section and rewrites only that."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

HEADER = "# Benchmarks\n\nEvery number here was printed by the command shown above it; rerun it to reproduce.\n"


def machine() -> str:
    """One line naming the machine a number was taken on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"{cpu} ({cpu_isa()}), {os.cpu_count()} cores{gpu}; torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads; Python {platform.python_version()}")


def cpu_isa() -> str:
    """The vector instructions torch uses on this CPU and whether it computes bfloat16
    natively, e.g. "AVX512, bfloat16 native" or "AVX2, bfloat16 not native"."""
    from lagsplit.engine.nets import cpu_bf16_native

    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    capped = f", oneDNN capped to {cap} by ONEDNN_MAX_CPU_ISA" if cap else ""
    return (f"{torch.backends.cpu.get_cpu_capability()}, bfloat16 "
            f"{'native' if cpu_bf16_native() else 'not native'}{capped}")


def update_section(name: str, body: str, path: str | Path = "BENCHMARKS.md") -> Path:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (append if absent)."""
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path
