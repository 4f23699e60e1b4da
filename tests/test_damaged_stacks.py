"""A TIFF an acquisition left damaged (cut short by a crash, a corrupt page) is replayed for
real: every frame it holds is in the HDF5 file read back, each one it cannot give is a
rejected gap, and one line says how many and why."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from lagsplit.adapters.stacks import FrameUnreadable, open_stack
from lagsplit.cli import app
from lagsplit.engine.hdf5_sink import read_counters
from lagsplit.run_file import read_gaps
from tests.support import FAST_CLI

CUT = 27
"""The frame whose data the cut goes through: frames from it on are lost."""


def _page_data(path: Path, page: int) -> tuple[int, int]:
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        return int(p.dataoffsets[0]), int(p.databytecounts[0])


def _damaged(path: Path, movie: np.ndarray, layout: str) -> list[int]:
    """Write ``movie`` as ``layout``, cut the file in the middle of frame CUT's data (a crash
    mid-write), and for "zlib" also corrupt frame 12; the frames it can no longer give."""
    bad = []
    if layout == "tifffile":  # tifffile's default: one contiguous block, the other pages' IFDs after it
        tifffile.imwrite(path, movie)
        start = _page_data(path, 0)[0] + CUT * movie[0].nbytes
        cut = start + movie[0].nbytes // 2
    elif layout == "imagej":  # as Fiji saves a time-lapse
        tifffile.imwrite(path, movie, imagej=True, metadata={"axes": "TYX"})
        cut = _page_data(path, 0)[0] + CUT * movie[0].nbytes + movie[0].nbytes // 2
    else:  # a compressed page after each IFD; frame 12's zlib stream broken
        tifffile.imwrite(path, movie, compression="zlib")
        offset, _ = _page_data(path, 12)
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write(b"\xff\xff\xff\xff")
        offset, size = _page_data(path, CUT)
        cut = offset + size // 2
        bad.append(12)
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    return [*bad, *range(CUT, len(movie))]


@pytest.mark.parametrize("layout", ["tifffile", "imagej", "zlib"])
def test_a_damaged_tiff_replays_every_frame_it_holds_and_records_the_rest_as_rejected(tmp_path, noise_stack, layout):
    src, out = tmp_path / "stack.tif", tmp_path / "run.h5"
    bad = _damaged(src, noise_stack, layout)
    res = CliRunner().invoke(app, ["replay", str(src), "--out", str(out), *FAST_CLI])
    text = " ".join(res.output.split())
    assert res.exit_code == 0, text
    good = [i for i in range(len(noise_stack)) if i not in bad]
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], good)
        np.testing.assert_array_equal(f["raw"][:], noise_stack[good])
        gaps = [(g["first_index"], g["count"], g["reason"]) for g in read_gaps(f)]
        counters = read_counters(f)
    expected = [(12, 1, "rejected")] if 12 in bad else []
    assert gaps == [*expected, (CUT, len(noise_stack) - CUT, "rejected")]
    assert counters["rejected"] == len(bad) and counters["received"] == len(noise_stack)
    assert counters["gaps"] == len(gaps)
    size = src.stat().st_size
    why = f"file truncated at byte {size:,}: frames {CUT}-{len(noise_stack) - 1}"
    assert f"{src}: {len(bad)} of {len(noise_stack)} frames could not be read (" in text
    assert why in text and "recorded as rejected gaps" in text
    if layout == "zlib":
        assert "corrupt page" in text and "frame 12" in text


def test_a_whole_tiff_reads_as_before_and_says_nothing_of_damage(tmp_path, noise_stack):
    for name, kw in (("plain.tif", {}), ("ij.tif", {"imagej": True, "metadata": {"axes": "TYX"}}),
                     ("z.tif", {"compression": "zlib"})):
        tifffile.imwrite(tmp_path / name, noise_stack, **kw)
        with open_stack(tmp_path / name) as stack:
            assert stack.damage is None
            np.testing.assert_array_equal(stack.read(), noise_stack)


def test_a_frame_past_the_cut_names_the_file_and_why(tmp_path, noise_stack):
    src = tmp_path / "stack.tif"
    _damaged(src, noise_stack, "tifffile")
    with open_stack(src) as stack:
        assert len(stack) == len(noise_stack) and stack.damage == f"file truncated at byte {src.stat().st_size:,}"
        np.testing.assert_array_equal(stack[CUT - 1], noise_stack[CUT - 1])
        with pytest.raises(FrameUnreadable, match=rf"frame {CUT} cannot be read \(file truncated at byte"):
            stack[CUT]


def test_a_corrupt_page_in_the_middle_of_the_page_list_loses_the_frames_after_it_with_the_reason(tmp_path, noise_stack):
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, noise_stack, compression="zlib")
    with tifffile.TiffFile(src) as tif:
        ifd = tif.pages[20].offset
    with open(src, "r+b") as fh:  # page 20's tag count: nonsense, so no page after 19 can be found
        fh.seek(ifd)
        fh.write(b"\xff\xff")
    with open_stack(src) as stack:
        assert len(stack) == len(noise_stack)  # as the first page's description declares
        np.testing.assert_array_equal(stack.read(0, 20), noise_stack[:20])
        for i in (20, len(noise_stack) - 1):
            with pytest.raises(FrameUnreadable, match=rf"frame {i} cannot be read \(corrupt page list \(the page at "
                                                      rf"byte {ifd:,} cannot be read\)\)"):
                stack[i]


def test_an_unreadable_first_frame_is_a_rejected_gap_before_the_first_row(tmp_path, noise_stack):
    src, out = tmp_path / "stack.tif", tmp_path / "run.h5"
    tifffile.imwrite(src, noise_stack[:8], compression="zlib")
    offset, _ = _page_data(src, 0)
    with open(src, "r+b") as fh:  # frame 0's zlib stream broken
        fh.seek(offset)
        fh.write(b"\xff\xff\xff\xff")
    res = CliRunner().invoke(app, ["replay", str(src), "--out", str(out), *FAST_CLI])
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(1, 8))
        assert [(g["first_index"], g["count"], g["reason"]) for g in read_gaps(f)] == [(0, 1, "rejected")]
        assert read_counters(f)["gaps"] == 1
