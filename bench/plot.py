"""A small PNG line-chart writer (zlib + struct, no plotting library in the dependencies).

Draws panels of latency-percentile lines with axes, ticks, a legend and titles in
a 5x7 bitmap font (upper case, digits and a little punctuation).
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GREY: Color = (200, 200, 200)
BLUE: Color = (31, 119, 180)
ORANGE: Color = (230, 110, 10)
GREEN: Color = (44, 160, 44)
RED: Color = (214, 39, 40)

_GLYPHS = {
    "0": ".###.#...##..###.#.###..##...#.###.",
    "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#...#####",
    "3": "#####...#...#......#....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.",
    "5": "######....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.",
    "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.",
    "9": ".###.#...##...#.####....#...#..##..",
    "A": ".###.#...##...#######...##...##...#",
    "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.",
    "D": "###..#..#.#...##...##...##..#.###..",
    "E": "######....#....####.#....#....#####",
    "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####",
    "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.",
    "J": "..###...#....#....#....#.#..#..##..",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#",
    "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##.#.##...##...##...#",
    "N": "#...##...###..##.#.##..###...##...#",
    "O": ".###.#...##...##...##...##...#.###.",
    "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#",
    "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".####.....#.....###.....#....#####.",
    "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.",
    "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.###.###...#",
    "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..",
    "Z": "#####....#...#...#...#...#....#####",
    " ": "." * 35,
    ".": "." * 25 + "..##...##.",
    ",": ".....................##....#...#...",
    ":": "......##...##........##...##.......",
    "-": "..........#####....................",
    "/": ".........#...#...#...#...#.........",
    "%": "##...##..#...#...#...#...#..##...##",
    "(": "...#...#...#....#....#.....#.....#.",
    ")": ".#.....#.....#....#....#...#...#...",
    "=": "..........#####.....#####..........",
    "+": ".......#....#..#####..#....#.......",
}


def _glyph(ch: str) -> str:
    rows = _GLYPHS.get(ch.upper(), _GLYPHS[" "])
    return rows.ljust(35, ".")[:35]


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(WHITE * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 1) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in range(steps + 1):
            x = round(x0 + (x1 - x0) * s / steps)
            y = round(y0 + (y1 - y0) * s / steps)
            for dx in range(-(width // 2), width - width // 2):
                for dy in range(-(width // 2), width - width // 2):
                    self.dot(x + dx, y + dy, color)

    def rect(self, x: int, y: int, w: int, h: int, color: Color) -> None:
        for yy in range(y, y + h):
            for xx in range(x, x + w):
                self.dot(xx, yy, color)

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 1) -> None:
        for n, ch in enumerate(text):
            rows = _glyph(ch)
            for r in range(7):
                for c in range(5):
                    if rows[r * 5 + c] == "#":
                        self.rect(x + (n * 6 + c) * scale, y + r * scale, scale, scale, color)

    @staticmethod
    def text_width(text: str, scale: int = 1) -> int:
        return len(text) * 6 * scale

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[3 * y * self.width : 3 * (y + 1) * self.width])
            for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


@dataclass(frozen=True)
class Series:
    label: str
    color: Color
    points: Sequence[tuple[float, float]]
    """(x, y) pairs; x are category positions 0..n-1."""


@dataclass(frozen=True)
class Panel:
    title: str
    x_labels: Sequence[str]
    y_label: str
    series: Sequence[Series]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(value))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= m * exp:
            return m * exp
    return 10 * exp


def render(path: Path, title: str, panels: Sequence[Panel], note: str = "") -> None:
    pw, ph = 460, 340
    margin_top = 50
    width, height = pw * len(panels), ph + margin_top + (24 if note else 8)
    canvas = Canvas(width, height)
    canvas.text((width - Canvas.text_width(title, 2)) // 2, 12, title, scale=2)
    for i, panel in enumerate(panels):
        ox, oy = i * pw, margin_top
        left, right, top, bottom = ox + 64, ox + pw - 20, oy + 30, oy + ph - 70
        canvas.text(ox + (pw - Canvas.text_width(panel.title)) // 2, oy + 8, panel.title, BLACK)
        ymax = _nice_max(max((y for s in panel.series for _, y in s.points), default=1.0))
        for t in range(6):
            value = ymax * t / 5
            y = bottom - round((bottom - top) * t / 5)
            canvas.line(left, y, right, y, GREY)
            label = f"{value:g}"
            canvas.text(left - 6 - Canvas.text_width(label), y - 3, label)
        canvas.line(left, top, left, bottom, BLACK)
        canvas.line(left, bottom, right, bottom, BLACK)
        n = len(panel.x_labels)

        def px(x: float, left: int = left, right: int = right, n: int = n) -> int:
            return left + 20 + round((right - left - 40) * x / max(n - 1, 1))

        for k, label in enumerate(panel.x_labels):
            canvas.line(px(k), bottom, px(k), bottom + 4, BLACK)
            canvas.text(px(k) - Canvas.text_width(label) // 2, bottom + 8, label)
        canvas.text(ox + 8, top - 16, panel.y_label)
        for s in panel.series:
            pts = [(px(x), bottom - round((bottom - top) * y / ymax)) for x, y in s.points]
            for (x0, y0), (x1, y1) in itertools.pairwise(pts):
                canvas.line(x0, y0, x1, y1, s.color, width=2)
            for x, y in pts:
                canvas.rect(x - 3, y - 3, 7, 7, s.color)
        for k, s in enumerate(panel.series):
            ly = bottom + 26 + 14 * (k // 2)
            lx = left + (k % 2) * (right - left) // 2
            canvas.rect(lx, ly, 14, 7, s.color)
            canvas.text(lx + 20, ly, s.label)
    if note:
        canvas.text(8, height - 14, note)
    path.write_bytes(canvas.png())
