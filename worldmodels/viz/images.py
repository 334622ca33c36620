"""Image grids as PNG (Pillow only), and videos (imageio + its bundled ffmpeg)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from worldmodels.data.atomic import atomic_write_bytes


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (or uint8) -> uint8."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def image_grid(rows: Sequence[np.ndarray], scale: int = 2, pad: int = 2,
               labels: Sequence[str] | None = None, label_width: int = 0) -> np.ndarray:
    """Stack rows of images (each (N, H, W, 3)) into one (H', W', 3) uint8 picture."""
    rows = [to_uint8(r) for r in rows]
    h, w = rows[0].shape[1:3]
    cols = max(len(r) for r in rows)
    out_h = len(rows) * (h * scale + pad) + pad
    out_w = label_width + cols * (w * scale + pad) + pad
    canvas = np.full((out_h, out_w, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            big = image.repeat(scale, axis=0).repeat(scale, axis=1)
            y, x = pad + i * (h * scale + pad), label_width + pad + j * (w * scale + pad)
            canvas[y:y + h * scale, x:x + w * scale] = big
    if labels:
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        for i, text in enumerate(labels):
            draw.text((4, pad + i * (h * scale + pad) + h * scale // 2 - 5), text, fill=(0, 0, 0))
        canvas = np.asarray(picture)
    return canvas


def save_png(path: str | os.PathLike, picture: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(picture)).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def save_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, scale: int = 4) -> None:
    """Frames (T, H, W, 3) -> an mp4 (H.264 through imageio's ffmpeg), written atomically."""
    import imageio.v2 as imageio

    frames = to_uint8(frames).repeat(scale, axis=1).repeat(scale, axis=2)
    tmp = f"{path}.tmp-{os.getpid()}.mp4"
    with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(frame)
    os.replace(tmp, path)
