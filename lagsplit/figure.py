"""The figure a run leaves behind: original | slow | fast | composite, for a few frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _scale(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((np.asarray(img, np.float32) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def composite(slow: np.ndarray, fast: np.ndarray, lo: float, hi: float, fast_hi: float) -> np.ndarray:
    """Pseudo-colour: slow in green, positive fast in magenta; (H, W, 3) floats in 0..1."""
    s = _scale(slow, lo, hi)
    f = _scale(fast, 0.0, fast_hi)
    return np.clip(np.stack([f, 0.85 * s, f], axis=-1), 0, 1)


def panel_figure(raw: np.ndarray, slow: np.ndarray, fast: np.ndarray, path: str | Path,
                 frames: list[int] | None = None, titles: tuple[str, ...] = ("original", "slow", "fast", "composite"),
                 max_side: int = 256) -> Path:
    """Write a PNG with one row per frame (raw, slow, fast, composite). Arrays are (T, H, W)."""
    t = len(raw)
    frames = frames if frames is not None else sorted({t // 4, t // 2, (3 * t) // 4, t - 1})
    lo, hi = np.percentile(raw[frames], [0.5, 99.8])
    fast_hi = float(np.percentile(np.abs(fast[frames]), 99.8)) or 1.0
    h, w = raw.shape[1:]
    zoom = max(1, max_side // max(h, w))
    step = max(1, int(np.ceil(max(h, w) / max_side)))
    tiles = []
    for i in frames:
        g = lambda a: np.repeat(np.repeat(a[::step, ::step], zoom, 0), zoom, 1)  # noqa: E731
        row = [np.stack([g(_scale(raw[i], lo, hi))] * 3, -1), np.stack([g(_scale(slow[i], lo, hi))] * 3, -1),
               np.stack([g(_scale(fast[i], -fast_hi, fast_hi))] * 3, -1), g(composite(slow[i], fast[i], lo, hi, fast_hi))]
        tiles.append(row)
    th, tw = tiles[0][0].shape[:2]
    pad, head, left = 4, 18, 60
    W = left + len(titles) * (tw + pad)
    H = head + len(frames) * (th + pad)
    canvas = Image.new("RGB", (W, H), (20, 20, 20))
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((left + c * (tw + pad) + 4, 3), title, fill=(230, 230, 230))
    for r, (i, row) in enumerate(zip(frames, tiles)):
        y = head + r * (th + pad)
        draw.text((4, y + th // 2 - 6), f"t={i}", fill=(230, 230, 230))
        for c, tile in enumerate(row):
            canvas.paste(Image.fromarray((tile * 255).astype(np.uint8)), (left + c * (tw + pad), y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
