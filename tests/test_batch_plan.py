"""What a batch runs, without a cluster: the recordings its inputs name and their output
names, the chunks of ``--split``, and the merge of the chunks' outputs, played for real
through the engine task by task."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from lagsplit.adapters.scenes import make_scene
from lagsplit.batch.inputs import InputError, find_recordings, plane_streams
from lagsplit.batch.plan import BatchRequest, plan_batch
from lagsplit.batch.run import merge_after
from lagsplit.batch.split import chunks
from lagsplit.batch.task import Outcome, run_task
from tests.test_batch import SMALL


def _sets() -> list[str]:
    return [v for k, v in zip(SMALL[::2], SMALL[1::2], strict=True) if k == "--set"]


def test_outputs_are_named_by_their_path_under_the_inputs_common_folder(tmp_path):
    for rel in ("day1/pos1.tif", "day2/pos1.tif", "day2/notes.txt", "day2/pos2.ome.tif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".tif"):
            tifffile.imwrite(tmp_path / rel, np.zeros((3, 8, 8), np.uint16), photometric="minisblack")
        else:
            (tmp_path / rel).write_text("not a recording")
    recs = find_recordings([str(tmp_path / "day1"), str(tmp_path / "day2"), str(tmp_path / "day*" / "*.tif")])
    assert [r.name for r in recs] == ["day1/pos1", "day2/pos1", "day2/pos2"]  # each once, notes.txt left out


def test_inputs_that_name_no_recording_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        find_recordings([str(tmp_path / "gone.tif")])
    with pytest.raises(InputError, match="folder without recordings"):
        find_recordings([str(tmp_path)])
    (tmp_path / "a.h5").write_bytes(b"")
    with pytest.raises(InputError, match=r"a.h5:/NAME"):
        find_recordings([str(tmp_path / "a.h5")])


def test_a_stack_with_channels_and_z_planes_is_a_stream_per_plane(tmp_path):
    tifffile.imwrite(tmp_path / "v.ome.tif", np.zeros((4, 3, 2, 8, 8), np.uint16), ome=True,
                     metadata={"axes": "TZCYX"})
    rec = find_recordings([str(tmp_path / "v.ome.tif")])[0]
    assert [(s.name, s.channel, s.z) for s in plane_streams(rec)] == [
        (f"v_c{c}_z{z}", c, z) for c in range(2) for z in range(3)]
    assert [(s.name, s.channel, s.z) for s in plane_streams(rec, channel=1)] == [
        (f"v_z{z}", 1, z) for z in range(3)]
    assert [(s.name, s.channel, s.z) for s in plane_streams(rec, channel=1, z=2)] == [("v", 1, 2)]


def test_chunks_cover_every_frame_once_and_start_early_by_the_overlap():
    cs = chunks(100, 3, overlap=20)
    assert [(c.start, c.keep_from, c.stop) for c in cs] == [(0, 0, 33), (13, 33, 67), (47, 67, 100)]
    with pytest.raises(ValueError, match="only 2 frames"):
        chunks(2, 3, 0)


@pytest.mark.parametrize("fmt", ["h5", "ome-zarr"])
def test_split_chunks_played_for_real_merge_into_one_output_holding_every_frame_once(tmp_path, fmt):
    if fmt == "ome-zarr":
        pytest.importorskip("zarr")
    from lagsplit.run_file import open_run

    movie = make_scene("drift", frames=90, size=32, seed=3).movie.astype(np.float32)
    np.save(tmp_path / "m.npy", movie)
    req = BatchRequest([str(tmp_path / "m.npy")], tmp_path / "out", sets=_sets(), split=3, overlap=10, format=fmt)
    (job,) = plan_batch(req)
    assert [t.config.source.start for t in job.tasks] == [0, 20, 50]
    outcomes = [run_task(t) for t in job.tasks]
    assert [o.status for o in outcomes] == ["ok"] * 3
    steps = 0
    for t in job.tasks:
        with open_run(t.partial) as f:
            steps += len(f["train/step"][:])
    merged = merge_after([(t.partial, c) for t, c in zip(job.tasks, job.chunks, strict=True)], job.partial,
                         job.final, job.name, *outcomes)
    assert merged.status == "ok" and merged.frames == 90
    with open_run(job.final) as f:
        assert f.whole_rows() == 90 and np.array_equal(f["frames/index"][:], np.arange(90))
        assert np.array_equal(np.asarray(f["raw"][:]), movie)
        assert f["slow"].shape == (90, 32, 32) and list(f.attrs["split_seams"]) == [30, 60]
        assert f.config["source"]["start"] == 0 and "90 frames" in str(f.attrs["source"])
        counts = f.counters()
        assert counts["processed"] == 90 and counts["received"] == 90
        assert steps and len(f["train/step"][:]) == steps  # every chunk's training log
    assert not any(Path(t.partial).exists() for t in job.tasks)


def test_a_chunk_that_failed_is_passed_on_and_nothing_is_merged(tmp_path):
    failed = Outcome("m#1", "failed", error="disk on fire")
    res = merge_after([], tmp_path / "p.h5", tmp_path / "m.h5", "m", Outcome("m#0", "ok"), failed)
    assert res.status == "failed" and res.error == "disk on fire" and not (tmp_path / "m.h5").exists()


def test_a_task_whose_partial_output_is_not_lagsplits_fails_naming_it(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((10, 16, 16), np.float32))
    (job,) = plan_batch(BatchRequest([str(tmp_path / "m.npy")], tmp_path / "out", sets=_sets()))
    job.partial.parent.mkdir(parents=True)
    job.partial.write_bytes(b"something else")
    res = run_task(job.tasks[0])
    assert res.status == "failed" and "cannot resume" in res.error and str(job.partial) in res.error
    assert job.partial.read_bytes() == b"something else"


def test_workers_and_a_scheduler_together_are_refused(tmp_path):
    from typer.testing import CliRunner

    from lagsplit.cli import app

    res = CliRunner().invoke(app, ["batch", str(tmp_path), "--out", str(tmp_path / "out"), "--workers", "2",
                                   "--scheduler", "tcp://127.0.0.1:8786"])
    assert res.exit_code == 2 and "give one of them" in res.output
    assert not (tmp_path / "out").exists()
