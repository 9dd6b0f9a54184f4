"""Reading a user's own digit images and making them look like MNIST.

MNIST digits were made by scaling each digit to fit a 20x20 box (keeping its aspect
ratio, anti-aliased to grey levels) and placing it in a 28x28 frame so that its
centre of mass sits at the frame's centre, white ink on black. A network trained
on MNIST only recognises digits presented that way, so :func:`preprocess` repeats
those steps for any picture: a phone photo of a digit on paper, a drawing from a
paint program, or an MNIST image itself (which comes out almost unchanged).

Pillow is needed to read files and to resample; it is part of the optional
``plot`` extra and imported only when these functions run.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import ConfigError, InputError

#: File name extensions :func:`iter_image_paths` picks up from a directory.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: Side of the box the digit's longer side is scaled to, and of the frame around it.
DIGIT_BOX = 20
FRAME = 28
#: Pictures with a longer side than this are area-averaged down to it first.
MAX_SIDE = 1024

# A picture whose ink rises less than this (on a 0-1 scale) above the background
# noise is called empty: a blank page photographed under uneven light still varies
# by a few grey levels.
MIN_CONTRAST = 0.08
# Grey levels more than this many robust standard deviations (from the median
# absolute deviation) above the border's median are ink; paper texture, sensor noise
# and JPEG blocking stay under that and are dropped. The median statistics are used
# because a digit that touches the edge of the picture puts ink into the border.
NOISE_SIGMAS = 4.0
# Ink separated from the rest of the digit by an empty row or column, and holding
# at most this fraction of the ink pixels, is a speck of dust or a stray mark, not
# part of the digit; it is left out of the crop.
SPECK_FRACTION = 0.02
# Only ink at least this strong (after stretching to 0-1) marks where the digit is.
# The faint halo a blurred or upscaled picture has around its strokes would
# otherwise widen the crop, and the digit would come out smaller than MNIST's.
CROP_LEVEL = 0.1


def _require_pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ConfigError(
            "reading and resizing images needs Pillow: pip install 'fastmnist[plot]'"
        ) from exc
    return Image


def _to_unit_gray(image: Any) -> np.ndarray:
    """Return the image as float32 grey levels in [0, 1] (1 is white), shape ``(h, w)``."""
    arr = np.asarray(image)
    if arr.dtype == object or not (
        arr.dtype == np.bool_
        or np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InputError(f"an image must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise InputError(
            "an image must be 2-D grey levels (h, w) or colour (h, w, 3) / (h, w, 4), "
            f"got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"the image is empty (shape {arr.shape}): no digit found")

    # float32 is plenty for grey levels and halves the memory a phone photo needs.
    if arr.dtype == np.bool_:
        scale = np.float32(1.0)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise InputError("integer image pixels must be in 0-255")
        scale = np.float32(1.0 / 255.0)
    else:
        if not np.isfinite(arr).all():
            raise InputError("the image contains NaN or infinite values")
        if arr.min() < 0.0 or arr.max() > 1.0:
            raise InputError(
                f"float image pixels must be in [0, 1], got [{arr.min():.3g}, "
                f"{arr.max():.3g}]; pass uint8 pixels to have them scaled"
            )
        scale = np.float32(1.0)

    if arr.ndim == 2:
        return arr.astype(np.float32) * scale
    # The ITU-R 601 luma weights, the same ones Pillow's convert("L") uses; one
    # channel at a time, so no float copy of all the channels is made.
    luma = (0.299, 0.587, 0.114)
    gray = sum(arr[:, :, c].astype(np.float32) * np.float32(w * scale) for c, w in enumerate(luma))
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3].astype(np.float32) * scale
        # Transparent pixels carry arbitrary colour (often black), so the picture has
        # to be flattened onto a backdrop. The backdrop must contrast with the ink, or
        # white ink on a transparent sheet would vanish on white.
        opaque = float(alpha.sum(dtype=np.float64))
        ink_level = float((gray * alpha).sum(dtype=np.float64)) / opaque if opaque > 0 else 0.0
        backdrop = np.float32(1.0 if ink_level < 0.5 else 0.0)
        gray = gray * alpha + backdrop * (np.float32(1.0) - alpha)
    return np.clip(gray, 0.0, 1.0)


def _shrink(gray: np.ndarray, image_module: Any) -> np.ndarray:
    """Area-average a picture larger than :data:`MAX_SIDE` down to that size.

    A phone photo has millions of pixels, of which the 20x20 digit keeps a few
    hundred; working on a smaller copy saves memory and time and loses nothing a
    digit covering more than a few percent of the picture needs.
    """
    h, w = gray.shape
    if max(h, w) <= MAX_SIDE:
        return gray
    f = MAX_SIDE / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    shrunk = image_module.fromarray(gray).resize(size, image_module.Resampling.BOX)
    return np.asarray(shrunk, dtype=np.float32)


def _border(values: np.ndarray) -> np.ndarray:
    """The pixels of a ring around the edge, about 3% of the side thick."""
    h, w = values.shape
    t = max(1, round(0.03 * min(h, w)))
    return np.concatenate(
        [values[:t].ravel(), values[-t:].ravel(), values[:, :t].ravel(), values[:, -t:].ravel()]
    )


def _extent(profile: np.ndarray) -> tuple[int, int]:
    """First and last index of the digit in a mask projection, specks left out.

    The projection splits into runs of non-empty rows (or columns) separated by
    empty ones. Runs at either end that hold only a sliver of the ink are isolated
    specks and are dropped; a connected digit is one run and is never trimmed.
    """
    nz = profile > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[False], nz, [False]]).astype(np.int8)))
    runs = list(zip(edges[::2], edges[1::2] - 1))  # inclusive (start, stop) pairs
    masses = [int(profile[a : b + 1].sum()) for a, b in runs]
    allowance = SPECK_FRACTION * profile.sum()
    lo, hi = 0, len(runs) - 1
    while lo < hi and masses[lo] <= allowance:
        lo += 1
    while hi > lo and masses[hi] <= allowance:
        hi -= 1
    return int(runs[lo][0]), int(runs[hi][1])


def preprocess(image: np.ndarray) -> np.ndarray:
    """Turn a picture of one digit into a 28x28 MNIST-style image.

    The steps follow how MNIST was made: convert to grey levels; invert when the
    background is light (judged from the median of the border pixels); subtract the
    background level and stretch the ink to full contrast, dropping noise no
    stronger than the border's; crop to the ink, leaving out isolated specks; scale
    the longer side to 20 pixels, keeping the aspect ratio (area-averaging, which
    anti-aliases); and place the result in a 28x28 frame so that its centre of
    mass lands on pixel (14, 14), white ink on black.

    Parameters
    ----------
    image : ndarray
        ``(h, w)`` grey levels, or ``(h, w, 3)`` RGB, or ``(h, w, 4)`` RGBA, of any
        size. uint8 (or other integers in 0-255), bool, or floats in [0, 1]. Dark
        ink on a light background and light ink on a dark one both work.

    Returns
    -------
    ndarray
        ``(784,)`` uint8, the 28x28 image flattened row by row, ready for
        :meth:`fastmnist.Model.predict`.

    Raises
    ------
    InputError
        If the array is not an image, or it holds no digit (blank or uniform).

    Notes
    -----
    The centre of mass is moved by whole pixels, as in MNIST itself, and the shift
    is limited so the 20-pixel digit stays inside the frame: a digit whose weight is
    far off its middle ends up a little off-centre rather than cut off.
    """
    image_module = _require_pillow()
    gray = _shrink(_to_unit_gray(image), image_module)

    # MNIST is light ink on black; paper is light, so most photos need inverting.
    ink = 1.0 - gray if np.median(_border(gray)) > 0.5 else gray
    border = _border(ink)
    level = float(np.median(border))
    ink = ink - level
    # The border is mostly background; its spread bounds the noise. A clean drawing
    # or an MNIST image has none, and then every grey level of the strokes is kept.
    # 1.4826 turns a median absolute deviation into a standard deviation.
    floor = NOISE_SIGMAS * 1.4826 * float(np.median(np.abs(border - level)))
    peak = float(ink.max())
    if peak - floor < MIN_CONTRAST:
        raise InputError("no digit found: the image is blank or uniform")
    # Stretch so the strongest ink is 1 and the noise ceiling 0, continuously, so
    # anti-aliased stroke edges keep their grey levels.
    ink = np.clip((ink - floor) / (peak - floor), 0.0, 1.0)

    mask = ink > CROP_LEVEL
    top, bottom = _extent(mask.sum(axis=1))
    left, right = _extent(mask.sum(axis=0))
    crop = ink[top : bottom + 1, left : right + 1]

    h, w = crop.shape
    scale = DIGIT_BOX / max(h, w)
    new_h = max(1, min(DIGIT_BOX, round(h * scale)))
    new_w = max(1, min(DIGIT_BOX, round(w * scale)))
    # Shrinking averages each output pixel's area (BOX): that is the anti-aliasing
    # MNIST has, and unlike Lanczos it leaves no ringing around the strokes. The
    # rare crop smaller than 20 pixels is enlarged with bicubic interpolation.
    shrinking = scale <= 1.0
    resample = image_module.Resampling.BOX if shrinking else image_module.Resampling.BICUBIC
    resized = image_module.fromarray(crop.astype(np.float32)).resize((new_w, new_h), resample)
    # Bicubic overshoots a little around sharp edges; the overshoot is not ink.
    digit = np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)
    top_ink = digit.max()
    if top_ink <= 0.0:
        raise InputError("no digit found: the ink vanishes when scaled to 20 pixels")
    # Thin strokes on a large picture average out to grey when shrunk; MNIST digits
    # always reach full white, so bring the strongest pixel back to 1.
    digit /= top_ink

    rows, cols = np.arange(new_h), np.arange(new_w)
    mass = digit.sum()
    com_y = float((digit.sum(axis=1) * rows).sum() / mass)
    com_x = float((digit.sum(axis=0) * cols).sum() / mass)
    centre = FRAME // 2
    # Whole-pixel shifts, rounding halves up: a symmetric digit 20 pixels tall has its
    # centre of mass exactly between two pixels, and it should always go the same way.
    y0 = int(np.clip(np.floor(centre - com_y + 0.5), 0, FRAME - new_h))
    x0 = int(np.clip(np.floor(centre - com_x + 0.5), 0, FRAME - new_w))

    frame = np.zeros((FRAME, FRAME), dtype=np.float64)
    frame[y0 : y0 + new_h, x0 : x0 + new_w] = digit
    return np.round(frame * 255.0).astype(np.uint8).ravel()


def _display_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return "<stdin>" if str(source) == "-" else str(os.fspath(source))
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else "<file object>"


def _pixels(img: Any) -> np.ndarray:
    """The pixels of a Pillow image as an array :func:`preprocess` accepts."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        # 16- and 32-bit greys (scientific TIFFs, 16-bit PNGs): scale by the format's
        # range when it is known, else by the brightest pixel.
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else float(max(values.max(), 1.0))
        if mode == "F" and values.max() <= 1.0:
            top = 1.0
        return np.clip(values / top, 0.0, 1.0)
    if "A" in mode or "transparency" in img.info:
        return np.asarray(img.convert("RGBA"))
    if mode in ("L", "RGB"):
        return np.asarray(img)
    return np.asarray(img.convert("RGB"))


def load_image(path_or_file: str | os.PathLike[str] | IO[bytes]) -> np.ndarray:
    """Read an image file and :func:`preprocess` it.

    Parameters
    ----------
    path_or_file : str, path-like or binary file object
        A path to anything Pillow reads (PNG, JPEG, BMP, GIF, WebP, TIFF, ...), an
        open binary file, or ``"-"`` for standard input. Only the first frame of an
        animation is used; a JPEG's EXIF orientation is applied.

    Returns
    -------
    ndarray
        ``(784,)`` uint8, see :func:`preprocess`.

    Raises
    ------
    InputError
        If the file is missing or not a readable image, or holds no digit; the
        message names the file.
    """
    image_module = _require_pillow()
    from PIL import ImageOps, UnidentifiedImageError

    name = _display_name(path_or_file)
    source: Any = path_or_file
    if isinstance(source, (str, os.PathLike)) and str(source) == "-":
        source = sys.stdin.buffer
    if not isinstance(source, (str, os.PathLike)):
        # Pillow needs to seek, which pipes cannot, so read the whole stream first.
        try:
            source = io.BytesIO(source.read())
        except (OSError, ValueError, AttributeError) as exc:
            raise InputError(f"cannot read image {name}: {exc}") from exc
    try:
        with image_module.open(source) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            pixels = _pixels(img)
    except FileNotFoundError as exc:
        raise InputError(f"cannot read image {name}: no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"cannot read image {name}: it is a directory") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"cannot read image {name}: not an image format Pillow knows") from exc
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as exc:
        # A truncated or corrupt file surfaces as any of these, depending on the codec.
        raise InputError(f"cannot read image {name}: {exc}") from exc
    try:
        return preprocess(pixels)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from exc


def _natural_key(path: Path) -> list[Any]:
    # digit10.png after digit9.png, as a person numbering files expects.
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


def iter_image_paths(args: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Expand command-line arguments into the image files they name.

    A directory becomes its image files (by extension, see
    :data:`IMAGE_EXTENSIONS`; not recursive; hidden files skipped), in natural order
    (``2.png`` before ``10.png``). A file is kept as given, whatever its extension,
    and ``"-"`` (standard input) is kept as ``"-"``. The order of the arguments is
    kept.

    Parameters
    ----------
    args : sequence of str or path-like
        Files, directories and ``"-"``.

    Returns
    -------
    list of str
        The paths, for :func:`load_image`.

    Raises
    ------
    InputError
        If an argument does not exist, or a directory holds no image files.
    """
    if isinstance(args, (str, os.PathLike)):
        args = [args]  # a lone path is an easy mistake, and iterating it gives characters
    paths: list[str] = []
    for arg in args:
        text = os.fspath(arg)
        if text == "-":
            paths.append("-")
            continue
        path = Path(text)
        if path.is_dir():
            found = sorted(
                (
                    p
                    for p in path.iterdir()
                    if p.suffix.lower() in IMAGE_EXTENSIONS
                    and not p.name.startswith(".")
                    and p.is_file()
                ),
                key=_natural_key,
            )
            if not found:
                exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
                raise InputError(f"no image files ({exts}) in directory {text}")
            paths.extend(str(p) for p in found)
        elif path.exists():
            paths.append(text)
        else:
            raise InputError(f"no such file or directory: {text}")
    return paths
