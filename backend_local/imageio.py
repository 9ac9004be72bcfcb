"""Loading input images safely: format and size checks before decoding, EXIF orientation, modes."""

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import IMAGE_TOO_LARGE, INVALID_INPUT, Gen3DError

MAX_PIXELS = 64_000_000
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "MPO")  # MPO: JPEGs from phones with a second frame
MIN_SIDE = 16


def _too_large(width, height):
    return Gen3DError(IMAGE_TOO_LARGE, "The image is %dx%d (%.0f megapixels); the limit is %d megapixels. "
                      "Scale it down and try again." % (width, height, width * height / 1e6, MAX_PIXELS // 1_000_000),
                      stage="preprocess", retryable=False)


def open_image(source):
    """Open and fully decode `source` (a path or bytes) into an RGBA or RGB uint8 array.

    The pixel count is checked from the header before any decoding, so a decompression bomb never
    reaches memory. Returns (array HxWx{3,4} uint8, has_real_alpha).
    """
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            if image.format not in ALLOWED_FORMATS:
                raise Gen3DError(INVALID_INPUT, "The image is %s; Gen3D reads PNG, JPEG and WebP. Convert it and "
                                 "try again." % (image.format or "in an unknown format"), stage="preprocess")
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise _too_large(width, height)
            if min(width, height) < MIN_SIDE:
                raise Gen3DError(INVALID_INPUT, "The image is only %dx%d pixels; use an image at least %d pixels "
                                 "on each side." % (width, height, MIN_SIDE), stage="preprocess")
            image.load()
    except Gen3DError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise Gen3DError(IMAGE_TOO_LARGE, "The image declares more pixels than Gen3D will decode (%s). Scale it "
                         "down to at most %d megapixels." % (exc, MAX_PIXELS // 1_000_000), stage="preprocess",
                         retryable=False)
    except FileNotFoundError:
        raise Gen3DError(INVALID_INPUT, "The image file %s does not exist. Check the path." % source, stage="preprocess")
    except IsADirectoryError:
        raise Gen3DError(INVALID_INPUT, "%s is a folder, not an image file." % source, stage="preprocess")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Gen3DError(INVALID_INPUT, "The image cannot be read (%s). Use a valid PNG, JPEG or WebP file."
                         % (str(exc) or type(exc).__name__), stage="preprocess")
    return _to_array(image)


def _to_array(image):
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale by the actual bit depth rather than clipping at 255.
        data = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if data.max() > 255 else 255.0
        grey = np.clip(data / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), False
    elif mode == "CMYK":
        image = image.convert("RGB")
    elif mode in ("LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    has_alpha = array.shape[2] == 4 and _alpha_is_real(array[..., 3])
    if array.shape[2] == 4 and not has_alpha:
        array = array[..., :3]
    return np.ascontiguousarray(array), has_alpha


def _alpha_is_real(alpha):
    """An alpha channel counts only if it actually hides some of the image (not all-opaque)."""
    return bool((alpha < 250).mean() > 0.001)
