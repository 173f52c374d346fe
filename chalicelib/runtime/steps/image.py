"""The ``image`` pre step at runtime: decode, flatten alpha, convert, resize, normalize."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.core.steps.image import ImageArgs, ImageParams
from chalicelib.runtime.codecs import (
    RequestError,
    invalid,
)
from chalicelib.runtime.steps.base import Geometry, StepCall

MAX_PIXELS = 40_000_000
"""Images above this many pixels are refused before decoding: 40 MP of RGB is 120 MB of memory."""


class ImageRun:
    """Encoded image bytes -> the model's tensor: decode, flatten alpha, convert, resize, normalize."""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ImageRun:
        """Built from the arguments the config file records (``ImageArgs``)."""
        a = ImageArgs.model_validate(args)
        return cls(a.params, a.input, a.formats)

    def __init__(self, params: ImageParams, input_name: str, formats: tuple[str, ...]) -> None:
        from PIL import Image as PILImage

        PILImage.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own guard, for any decode path
        self.pil = PILImage
        self.p = params
        self.input_name = input_name
        self.formats = [f.upper() for f in formats]
        self.dtype = np.dtype(params.dtype)
        channels = 3 if params.mode == "RGB" else 1
        self.mean = (
            None if params.mean is None else np.asarray(params.mean, self.dtype).reshape(1, 1, channels)
        )
        self.std = None if params.std is None else np.asarray(params.std, self.dtype).reshape(1, 1, channels)

    def __call__(self, data: bytes, inv: StepCall | None = None) -> dict[str, npt.NDArray[Any]]:
        source = self._decode(data)
        fitted, geometry = self._resize(source.convert(self.p.mode))
        if inv is not None:
            inv.image, inv.geometry = source, geometry
        pixels = np.asarray(fitted, dtype=self.dtype)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        p = self.p
        if p.invert:
            pixels = 255 - pixels
        pixels = pixels * self.dtype.type(p.scale)
        if self.mean is not None:
            pixels = pixels - self.mean
        if self.std is not None:
            pixels = pixels / self.std
        if p.layout == "NCHW":
            tensor = pixels.transpose(2, 0, 1)[None]
        elif p.layout == "NHWC":
            tensor = pixels[None]
        else:
            tensor = pixels.reshape(1, -1)
        return {self.input_name: np.ascontiguousarray(tensor, dtype=self.dtype)}

    def _decode(self, data: bytes) -> Any:
        """The request's image, EXIF-rotated, transparency flattened onto white (mode not converted)."""
        pil = self.pil
        from PIL import ImageOps

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pil.DecompressionBombWarning)
                img = pil.open(io.BytesIO(data), formats=self.formats)
                width, height = img.size
                if width * height > MAX_PIXELS:
                    limit = MAX_PIXELS // 1_000_000
                    raise invalid(
                        f"image too large: {width}x{height} pixels, the limit is {limit} megapixels"
                    )
                ImageOps.exif_transpose(img, in_place=True)  # phone pictures: sideways + an EXIF rotation
            if "A" in img.getbands() or "transparency" in img.info:
                # Transparent pixels carry arbitrary colour; flatten them onto white paper, as they appear.
                rgba = img.convert("RGBA")
                img = pil.alpha_composite(pil.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            img.load()
            return img
        except (pil.DecompressionBombError, pil.DecompressionBombWarning) as exc:
            size = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow names the size it refused
            what = f"{int(size.group(1)) / 1e6:g} megapixels, " if size else ""
            raise invalid(
                f"image too large: {what}the limit is {MAX_PIXELS // 1_000_000} megapixels"
            ) from None
        except pil.UnidentifiedImageError:
            raise invalid(f"the body is not an image this model takes ({', '.join(self.formats)})") from None
        except RequestError:
            raise
        except Exception as exc:  # truncated or corrupt data: Pillow's decoders raise many types
            raise invalid(f"the image could not be decoded: {' '.join(str(exc).split())[:200]}") from None

    def _resize(self, img: Any) -> tuple[Any, Geometry]:
        from PIL import ImageOps

        height, width = self.p.size
        geometry = Geometry(img.width, img.height, width, height)
        if img.size == (width, height):
            return img, geometry
        # BOX averages every source pixel when shrinking (no aliasing); BICUBIC interpolates when growing.
        shrink = img.width >= width and img.height >= height
        resample = self.pil.Resampling.BOX if shrink else self.pil.Resampling.BICUBIC
        if self.p.resize == "stretch":
            scaled = replace(geometry, scale_x=width / img.width, scale_y=height / img.height)
            return img.resize((width, height), resample=resample), scaled
        if self.p.resize == "crop":
            fitted = ImageOps.fit(img, (width, height), method=resample)
            # The crop box ImageOps.fit resizes (centred, of the model's aspect ratio).
            ratio = width / height
            crop_w, crop_h = (
                (img.height * ratio, img.height)
                if img.width / img.height >= ratio
                else (
                    img.width,
                    img.width / ratio,
                )
            )
            left, top = (img.width - crop_w) / 2, (img.height - crop_h) / 2
            scaled = replace(geometry, scale_x=width / crop_w, scale_y=height / crop_h, src_x=left, src_y=top)
            return fitted, scaled
        # Letterbox bars are background: white paper when the step inverts dark ink, else black.
        fill = 255 if self.p.invert else 0
        color = fill if img.mode == "L" else (fill, fill, fill)
        inner = ImageOps.contain(img, (width, height), method=resample)  # as ImageOps.pad does
        dst_x, dst_y = round((width - inner.width) * 0.5), round((height - inner.height) * 0.5)
        padded = self.pil.new(img.mode, (width, height), color)
        padded.paste(inner, (dst_x, dst_y))
        scaled = replace(
            geometry,
            scale_x=inner.width / img.width,
            scale_y=inner.height / img.height,
            dst_x=dst_x,
            dst_y=dst_y,
        )
        return padded, scaled
