"""Checks that a rendered image file is whole, and PNGs made byte-reproducible (stdlib only).

A full disk can make Blender write a short file without raising, so the render loop checks
every image and mask before it records it: a PNG must have its signature, every chunk's CRC,
an IHDR first, image data that decompresses to its end, and IEND last; a JPEG its start and
end markers. Blender also writes the render date and timings as PNG text chunks (JPEG comment
segments), which would make two renders of identical pixels differ in bytes;
`finish_image` checks a file and drops them, from one read.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Text and time chunks: Blender's date, render time, file name and engine statistics.
VOLATILE_PNG_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"tIME"})


class DamagedImage(ValueError):
    """An image file that is truncated or corrupt; the message says what is wrong."""


def png_chunks(data: bytes, decompress: bool = True) -> list[tuple[bytes, bytes]]:
    """The (type, payload) chunks of a whole PNG; raises DamagedImage for anything else
    (decompress=False skips decompressing the image data, leaving the chunk checksums)."""
    if not data.startswith(PNG_SIGNATURE):
        raise DamagedImage("no PNG signature" if data else "empty file")
    chunks = []
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise DamagedImage(f"truncated at byte {len(data)} (chunk header cut off)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise DamagedImage(f"truncated at byte {len(data)} (chunk {kind!r} needs {end} bytes)")
        payload = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(kind + payload) & 0xFFFFFFFF != crc:
            raise DamagedImage(f"chunk {kind!r} at byte {pos} has a wrong checksum")
        chunks.append((kind, payload))
        pos = end
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR":
        raise DamagedImage("no IHDR chunk first")
    if chunks[-1][0] != b"IEND":
        raise DamagedImage(f"truncated at byte {len(data)} (no IEND chunk)")
    if pos != len(data):
        raise DamagedImage(f"{len(data) - pos} bytes after the IEND chunk")
    if not decompress:
        return chunks
    stream = zlib.decompressobj()
    try:
        for kind, payload in chunks:
            if kind == b"IDAT":
                stream.decompress(payload)
    except zlib.error as exc:
        raise DamagedImage(f"image data does not decompress ({exc})") from None
    if not stream.eof:
        raise DamagedImage("image data ends early (no IDAT chunk, or a cut-off stream)")
    return chunks


def check_image(path: str | os.PathLike) -> None:
    """Raise DamagedImage unless `path` is a whole PNG or JPEG file (chosen by its suffix)."""
    _checked_chunks(Path(path).read_bytes(), Path(path).suffix.lower())


def finish_image(path: str | os.PathLike) -> None:
    """check_image, then rewrite a PNG without its text and time chunks (a JPEG without its
    comment segments; no-op when it has none), from one read and one parse: what the render
    loop does with every new image and mask before recording it."""
    path = Path(path)
    data = path.read_bytes()
    suffix = path.suffix.lower()
    chunks = _checked_chunks(data, suffix)
    stripped = _strip_png(data, chunks) if chunks is not None else _strip_jpeg(data) if suffix in (".jpg", ".jpeg") \
        else data
    if stripped != data:
        path.write_bytes(stripped)  # a failed write raises (OSError), unlike Blender's writer


def _checked_chunks(data: bytes, suffix: str) -> list[tuple[bytes, bytes]] | None:
    """The PNG's chunks (None for other formats) after checking the file is whole."""
    if suffix == ".png":
        return png_chunks(data)
    if suffix in (".jpg", ".jpeg"):
        if not data.startswith(b"\xff\xd8"):
            raise DamagedImage("no JPEG start marker" if data else "empty file")
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise DamagedImage(f"truncated at byte {len(data)} (no JPEG end marker)")
    elif not data:
        raise DamagedImage("empty file")
    return None


def _strip_png(data: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    kept = [(kind, payload) for kind, payload in chunks if kind not in VOLATILE_PNG_CHUNKS]
    if len(kept) == len(chunks):
        return data
    out = [PNG_SIGNATURE]
    for kind, payload in kept:
        out.append(struct.pack(">I", len(payload)) + kind + payload
                   + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    return b"".join(out)


def _strip_jpeg(data: bytes) -> bytes:
    """Drop COM (0xFFFE) segments before the scan; anything unexpected leaves the file as is."""
    if not data.startswith(b"\xff\xd8"):
        return data
    out, pos = [data[:2]], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the compressed image follows
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker != 0xFE:
            out.append(data[pos:pos + 2 + length])
        pos += 2 + length
    else:
        return data
    return b"".join(out) + data[pos:]
