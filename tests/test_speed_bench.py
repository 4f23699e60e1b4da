"""`lagsplit bench speed` end to end at a tiny size: every column measured, written where asked."""
from __future__ import annotations

import importlib.util

from lagsplit.engine.nets import cpu_bf16_native
from lagsplit.sink_speed import frames_at, run_sinks
from lagsplit.speed import precisions, run_speed


def test_bench_speed_writes_its_section_and_the_readme_table(tmp_path):
    bench, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- speed-summary:start -->\nold\n<!-- speed-summary:end -->\n\nafter\n")
    text = run_speed([32], 24, ["model.windows=[8]", "train.warmup_steps=4"], live_fps=40.0, soak=60,
                     path=str(bench), readme=str(readme), startup=False)  # start-up: tests/test_startup.py
    assert "| 32² |" in text and "OpenCV MOG2" in text and "HDF5 sink alone" in text
    measured = precisions(["model.windows=[8]"])
    assert measured == (["bfloat16", "float32"] if cpu_bf16_native() else ["float32"])
    assert "bfloat16 native" in text if cpu_bf16_native() else "bfloat16 not native" in text
    for precision in measured:  # each precision the CPU computes natively, live with components off and on
        for comps in ("off", "on"):
            row = next(line for line in text.splitlines() if line.startswith(f"| 32² | {precision} | {comps} | 40 /s |"))
            processed, dropped = (int(c) for c in row.split("|")[5:7])
            assert processed + dropped == 24
            shed = [int(n) for n in row.split("|")[9].split("/")]
            assert len(shed) == 3 and all(0 <= n <= 24 for n in shed)
        assert f"- 32², {precision}:" in text
    assert "What limits each size" in text
    memory = next(line for line in text.splitlines() if line.startswith("| 32² |") and "MiB |" in line)
    first, second, growth = (c.strip() for c in memory.split("|")[2:5])
    lo, hi = (float(v) for v in first.removesuffix(" MiB").split("-"))
    assert 0 < lo <= hi and second.endswith(" MiB") and growth.endswith(" MiB")
    assert "<!-- speed:start -->" in bench.read_text()
    summary = readme.read_text()
    assert "old" not in summary and f"| 32x32 | {measured[0]} | 40 /s |" in summary and summary.endswith("after\n")


def test_bench_speed_sinks_only_writes_every_setting_and_the_live_runs(tmp_path):
    from lagsplit.sink_speed import settings

    bench, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- sinks-summary:start -->\nold\n<!-- sinks-summary:end -->\n")
    text = run_sinks([32], ["model.windows=[8]", "train.warmup_steps=4"], sink_frames=2, live_frames=24,
                     path=str(bench), readme=str(readme))
    labels = [s.label for s in settings()]
    assert "HDF5, none, float32" in labels and "HDF5, lzf, float16" in labels
    assert ("OME-Zarr, blosc-lz4, float16" in labels) == (importlib.util.find_spec("zarr") is not None)
    rows = [line for line in text.splitlines() if line.startswith("| 32² |") and "MiB |" in line]
    assert [row.split("|")[2].strip() for row in rows] == labels
    for row in rows:  # every setting wrote the frames kept (4 at 32 px: 2x sink_frames) and they reached the disk
        cells = [c.strip() for c in row.split("|")]
        assert int(cells[3]) == frames_at(32, 2) == 4
        assert float(cells[4].removesuffix(" /s")) > 0 and float(cells[6].removesuffix(" /s")) > 0
        assert float(cells[9]) > 0  # bytes on disk over the arrays' bytes (at 32 px mostly metadata)
    engine = next(line for line in text.splitlines() if line.startswith("| 32² |") and line.count("|") == 3)
    assert float(engine.split("|")[2].strip().removesuffix(" /s")) > 0
    live = [line for line in text.splitlines() if line.startswith("| 32² |") and ("kept up" in line or "dropped" in line)]
    assert live and live[0].split("|")[2].strip() == "HDF5, none, float32"  # the default first, then the fastest
    for row in live:
        processed, dropped = (int(c) for c in row.split("|")[4].split("/"))
        assert processed + dropped == 24
    assert "<!-- sinks:start -->" in bench.read_text()
    summary = readme.read_text()
    assert "old" not in summary and "HDF5, none, float32" in summary and "--sinks-only --sizes 32" in summary
