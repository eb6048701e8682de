"""A bar chart of ratios against their floors and goals, as a PNG, in pure Python (no matplotlib).

One horizontal bar per benchmark on a log scale: the bar is the measured ratio
(green: at or above its floor and its goal met or no goal; orange: above its
floor but the goal missed; red: below its floor; grey: no floor), a black tick
marks the floor, a blue tick the goal, and the thin vertical line is 1.0
(as fast as the baseline). Text uses a built-in 5x7 pixel font (upper case).
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

# 5x7 glyphs, one string of 7 rows of 5 bits ('#' = ink) per character
_FONT_ROWS = {
    "A": ".###.#...##...#######...##...##...#", "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.", "D": "####.#...##...##...##...##...#####.",
    "E": "######....#....####.#....#....#####", "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####", "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.", "J": "..###...#....#....#....#.#..#..##..",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#", "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##...##...##...##...#", "N": "#...###..##.#.##..###...##...##...#",
    "O": ".###.#...##...##...##...##...#.###.", "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#", "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".#####....#.....###.....#....#####.", "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.", "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.##.#.#.#.#.", "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..", "Z": "#####....#...#...#...#...#....#####",
    "0": ".###.#...##..###.#.###..##...#.###.", "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#...#####", "3": "#####...#...#.....#.....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.", "5": "######....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.", "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.", "9": ".###.#...##...#.####....#...#..##..",
    ".": "..........................##...##..", ",": ".....................##...#...#....",
    ":": ".....##...##.........##...##.......", "-": "...............###.................",
    "_": "..............................#####", "/": ".....#...#...#...#...#.............",
    "(": "...#...#...#....#....#.....#.....#.", ")": ".#.....#.....#....#....#...#...#...",
    "%": "##...##..#...#...#...#...#..##...##", "<": "....#...#...#...#.....#.....#.....#",
    ">": "#.....#.....#.....#...#...#...#....", "=": "..........#####.....#####..........",
    "+": ".......#....#..#####..#....#.......", "*": ".......#..#.#.#.###.#.#.#..#.......",
    " ": "...................................",
}
_FONT = {char: [rows[i * 5:(i + 1) * 5] for i in range(7)] for char, rows in _FONT_ROWS.items() if rows}

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (150, 150, 150)
LIGHT = (225, 225, 225)
GREEN = (60, 160, 80)
ORANGE = (235, 150, 40)
RED = (210, 50, 50)
BLUE = (40, 90, 220)


class Canvas:
    def __init__(self, width: int, height: int):
        self.width = width
        self.height = height
        self.pixels = bytearray(WHITE * (width * height))

    def put(self, x: int, y: int, color: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            offset = 3 * (y * self.width + x)
            self.pixels[offset:offset + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            offset = 3 * (y * self.width + x0)
            self.pixels[offset:offset + len(row)] = row

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = BLACK, scale: int = 1) -> int:
        for char in text.upper():
            glyph = _FONT.get(char, _FONT["*"])
            for row, bits in enumerate(glyph):
                for col, bit in enumerate(bits):
                    if bit == "#":
                        self.rect(x + col * scale, y + row * scale, x + (col + 1) * scale, y + (row + 1) * scale,
                                  color)
            x += 6 * scale
        return x

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.pixels[3 * y * self.width:3 * (y + 1) * self.width])
                       for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + \
            chunk(b"IEND", b"")


def text_width(text: str, scale: int = 1) -> int:
    return 6 * scale * len(text)


def bar_chart(rows: list[dict], path: Path, title: str) -> None:
    """rows: dicts with ``label``, ``ratio``, ``floor`` (or None), ``goal`` (or None), ``status``."""
    rows = [row for row in rows if isinstance(row.get("ratio"), (int, float)) and row["ratio"] > 0]
    label_width = max([text_width(row["label"]) for row in rows] + [200]) + 20
    value_width = 70
    plot_width = 560
    bar_height, gap, top, bottom = 11, 5, 46, 40
    width = label_width + plot_width + value_width + 20
    height = top + bottom + max(1, len(rows)) * (bar_height + gap)
    canvas = Canvas(width, height)
    canvas.text(10, 10, title, BLACK, 2)
    canvas.text(10, 30, "RATIO (LOG SCALE, HIGHER IS BETTER). BAR: MEASURED, BLACK: FLOOR, BLUE: GOAL", GREY)
    values = [row["ratio"] for row in rows] + [row["floor"] for row in rows if row.get("floor")] + \
        [row["goal"] for row in rows if row.get("goal")]
    low = 10 ** math.floor(math.log10(min(values + [0.5])))
    high = 10 ** math.ceil(math.log10(max(values + [2.0])))
    span = math.log10(high) - math.log10(low)
    x0 = label_width

    def xpos(value: float) -> int:
        return x0 + int(plot_width * (math.log10(max(value, low)) - math.log10(low)) / span)

    plot_bottom = top + len(rows) * (bar_height + gap)
    tick = low
    while tick <= high * 1.0001:
        for multiple in (1, 3):
            value = tick * multiple
            if value > high * 1.0001:
                continue
            x = xpos(value)
            canvas.rect(x, top - 4, x + 1, plot_bottom, LIGHT)
            label = f"{value:g}"
            canvas.text(x - text_width(label) // 2, plot_bottom + 6, label, GREY)
        tick *= 10
    one = xpos(1.0)
    canvas.rect(one, top - 4, one + 1, plot_bottom, GREY)
    for index, row in enumerate(rows):
        y = top + index * (bar_height + gap)
        canvas.text(10, y + 2, row["label"])
        color = {"ok": GREEN, "goal missed": ORANGE, "below floor": RED}.get(row.get("status"), GREY)
        canvas.rect(x0, y, max(x0 + 1, xpos(row["ratio"])), y + bar_height, color)
        if row.get("floor"):
            x = xpos(row["floor"])
            canvas.rect(x - 1, y - 2, x + 2, y + bar_height + 2, BLACK)
        if row.get("goal"):
            x = xpos(row["goal"])
            canvas.rect(x - 1, y - 2, x + 2, y + bar_height + 2, BLUE)
        canvas.text(x0 + plot_width + 10, y + 2, f"{row['ratio']:.3g}")
    path.write_bytes(canvas.png())
