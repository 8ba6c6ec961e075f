"""File types from magic bytes; the declared content type of an upload is never trusted."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileType:
    kind: str
    content_type: str
    extension: str


PNG = FileType("image", "image/png", "png")
JPEG = FileType("image", "image/jpeg", "jpg")
WEBP = FileType("image", "image/webp", "webp")
GIF = FileType("image", "image/gif", "gif")
MP4 = FileType("video", "video/mp4", "mp4")
MOV = FileType("video", "video/quicktime", "mov")
WEBM = FileType("video", "video/webm", "webm")
MP3 = FileType("audio", "audio/mpeg", "mp3")
WAV = FileType("audio", "audio/wav", "wav")
OGG = FileType("audio", "audio/ogg", "ogg")
M4A = FileType("audio", "audio/mp4", "m4a")

SNIFF_BYTES = 64
SUPPORTED = "PNG, JPEG, WebP, GIF, MP4, WebM, MOV, MP3, WAV, OGG, M4A"
IMAGE_TYPES = "PNG, JPEG, WebP or GIF"  # wherever an image is taken (a frame, a reference)


def sniff(head: bytes) -> FileType | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WAV
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return WEBM
    if head[:4] == b"OggS":
        return OGG
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return MOV
        if brand in (b"M4A ", b"M4B "):
            return M4A
        return MP4
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return MP3
    return None


def describe(head: bytes) -> str:
    """What a file starting with ``head`` is, for a message: "a video file (video/mp4)"."""
    kind = sniff(head)
    if kind is not None:
        return f"a {kind.kind} file ({kind.content_type})"
    if head.lstrip()[:1] == b"<":
        return "an HTML or XML document (a web page, or an SVG)"
    return "a file of an unrecognised type"
