"""Turning the image URLs of a request into decoded images for the engine.

Remote images are fetched through ``netguard`` (public addresses only, pinned against DNS
rebinding, size and time limits) when a job is submitted and stored as uploads; the dispatcher reads
them back from storage, and the bytes must sniff and decode as an image of bounded pixel count (no
decompression bombs).
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

import httpx
from PIL import Image

from openreel.netguard import BlockedURL, DeadlinePassed, LookupsBusy, guarded_stream, read_limited
from openreel.settings import Settings
from openreel.storage.base import Storage
from openreel.storage.signing import Signer
from openreel.storage.sniff import IMAGE_TYPES, SNIFF_BYTES, FileType, describe, sniff


class InputError(Exception):
    """A request input that cannot be used; the message is shown to the user as the job's error."""


def image_type(head: bytes) -> FileType | None:
    """The image type of bytes that start with ``head``, sniffed (never taken from a header); None if
    they are not an image openreel takes."""
    kind = sniff(head)
    return kind if kind is not None and kind.kind == "image" else None


def not_an_image(head: bytes) -> str:
    """What bytes that are not an image are, and which types are taken: the end of a sentence."""
    return f"is {describe(head)}, not an image (accepted: {IMAGE_TYPES})"


def require_image(source: str, head: bytes) -> None:
    if image_type(head) is None:
        raise InputError(f"{source} {not_an_image(head)}")


def fetch(url: str, settings: Settings, *, max_bytes: int) -> bytes:
    """GET an image from a user-supplied URL through the SSRF guard, with size, time and redirect
    limits; anything that is not an image is refused by its first bytes. ``LookupsBusy`` passes
    through: the server's own load, not the URL's fault."""
    try:
        with guarded_stream(
            "GET",
            url,
            allow_private=settings.allow_private_urls,
            timeout_s=settings.fetch_timeout_s,
            max_redirects=settings.fetch_max_redirects,
        ) as response:
            if response.status_code != 200:
                raise InputError(f"{url} answered HTTP {response.status_code}")
            return read_limited(
                response, max_bytes, url, head=(SNIFF_BYTES, lambda head: require_image(url, head))
            )
    except LookupsBusy:
        raise
    except (BlockedURL, DeadlinePassed) as exc:
        raise InputError(str(exc)) from exc
    except httpx.HTTPError as exc:
        raise InputError(f"could not fetch {url}: {exc.__class__.__name__}") from exc


def opened_image(file: str | os.PathLike[str] | BinaryIO, *, source: str, max_pixels: int) -> Image.Image:
    """The image with its header read, not yet its pixels: ``InputError`` if there is no header to read
    or it promises more than ``max_pixels`` (a decompression bomb, say)."""
    try:
        image = Image.open(file)
    except Exception as exc:
        raise InputError(f"{source} could not be decoded as an image: {exc}") from exc
    if image.width * image.height > max_pixels:
        image.close()
        raise InputError(f"{source} is {image.width}x{image.height}, over the {max_pixels}-pixel limit")
    return image


def decode_image(data: bytes, *, source: str, max_pixels: int) -> Image.Image:
    require_image(source, data[:SNIFF_BYTES])
    image = opened_image(io.BytesIO(data), source=source, max_pixels=max_pixels)
    try:
        image.load()
    except Exception as exc:
        raise InputError(f"{source} could not be decoded as an image: {exc}") from exc
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent areas become white, as on a page; a plain RGB conversion would show whatever
        # colour the encoder left under them (often black).
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def load_image(url: str, *, settings: Settings, signer: Signer, storage: Storage) -> Image.Image:
    """A job's image: always an upload by now (remote ones are stored when the job is submitted)."""
    key = signer.own_key(url, check_expiry=False)
    if key is None:
        raise InputError(f"{url} is not a file of this server")
    try:
        data = storage.read_bytes(key)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"{url} has expired or was removed") from exc
    return decode_image(data, source=url, max_pixels=settings.max_image_pixels)
