"""Opening a page in headless Chromium (Debian's ``chromium``), for the report tests.

``open_page(path, artifacts)`` loads a local file with no network, takes a
screenshot and the DOM after layout, and collects what Chromium logged from the
page's console (``--enable-logging=stderr``). ``png_pixels`` decodes the screenshot
(8-bit RGB/RGBA, no interlace, as Chromium writes it) with the standard library, so
a test can count the pixels of a colour without an imaging package.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import struct
import subprocess
import tempfile
import zlib

__all__ = ["Page", "chromium", "open_page", "png_pixels"]

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
    # No network at all: a page that needs anything from outside shows it by failing.
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclasses.dataclass(frozen=True)
class Page:
    dom: str
    screenshot: pathlib.Path
    console: list[str]  # console messages and resource-loading failures Chromium logged


def _run(binary: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def open_page(path: pathlib.Path, screenshot: pathlib.Path, size: str = "1280,2400") -> Page:
    binary = chromium()
    assert binary is not None, "chromium is not installed (apt-get install -y chromium)"
    url = path.resolve().as_uri()
    dumped = _run(binary, ["--dump-dom", url])
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    shot = _run(binary, [f"--screenshot={screenshot}", f"--window-size={size}", url])
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    console = [
        line
        for line in (dumped.stderr + shot.stderr).splitlines()
        if "CONSOLE" in line or "Failed to load resource" in line or "net::ERR_" in line
    ]
    return Page(dumped.stdout, screenshot, console)


def png_pixels(path: pathlib.Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(width, height, RGB pixels row by row) of an 8-bit, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, header = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    previous = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    offset = 0
    for _ in range(height):
        kind, line = raw[offset], bytearray(raw[offset + 1 : offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + predictor) & 0xFF
        pixels.extend((line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels))
        previous = line
    return width, height, pixels
