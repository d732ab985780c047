"""The main colours of a logo, by name: what the brand choice "Colours of my logo" adds to the prompt. The text
encoder knows "navy blue" and "orange", not #1F2A5C, so each colour is named after the nearest of a few dozen common
colour names, measured in CIELAB, where distances follow what people see."""

from __future__ import annotations

from collections import Counter

from PIL import Image

# Common colour names a text encoder has seen often, with a typical sRGB value of each.
NAMED_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (0, 0, 0)),
    ("dark grey", (70, 70, 70)),
    ("grey", (128, 128, 128)),
    ("light grey", (200, 200, 200)),
    ("white", (255, 255, 255)),
    ("cream", (250, 243, 215)),
    ("beige", (220, 200, 160)),
    ("brown", (120, 72, 35)),
    ("maroon", (110, 20, 40)),
    ("dark red", (150, 15, 25)),
    ("red", (220, 30, 40)),
    ("coral", (250, 120, 90)),
    ("orange", (250, 140, 20)),
    ("gold", (212, 175, 55)),
    ("yellow", (250, 220, 30)),
    ("olive", (120, 120, 40)),
    ("lime green", (150, 220, 40)),
    ("green", (30, 150, 60)),
    ("dark green", (10, 80, 40)),
    ("mint green", (160, 230, 190)),
    ("teal", (0, 128, 128)),
    ("turquoise", (60, 210, 200)),
    ("sky blue", (120, 190, 240)),
    ("blue", (30, 90, 220)),
    ("navy blue", (10, 20, 110)),
    ("purple", (120, 50, 170)),
    ("lavender", (190, 170, 230)),
    ("magenta", (220, 40, 200)),
    ("hot pink", (240, 60, 150)),
    ("pink", (250, 170, 200)),
)
MAX_COLOURS = 3
MIN_SHARE = 0.08  # of the logo's own pixels (its background left out): smaller specks are not its colours
BACKGROUND_SHARE = 0.6  # of the border: a colour that fills this much of the border is the background
WHITISH_LIGHTNESS, WHITISH_CHROMA = 92.0, 8.0  # paper white, off-white: where a logo sits, not its colour
WORKING_SIDE = 128  # enough pixels to count colours; the logo is kept at 512 px


def logo_colours(image: Image.Image) -> list[str]:
    """Up to MAX_COLOURS names of the logo's main colours, the commonest first. A white background (around the
    border; a transparent one was flattened to white when the logo was kept) is not one of them, unless the logo is
    nothing else."""
    small = image.convert("RGB")
    small.thumbnail((WORKING_SIDE, WORKING_SIDE))
    quantized = small.quantize(colors=8, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    counts = Counter(quantized.getdata())
    background = _background_index(quantized)
    own = {index: count for index, count in counts.items() if index != background} or dict(counts)
    total = sum(own.values())
    names: list[str] = []
    for index, count in sorted(own.items(), key=lambda item: -item[1]):
        name = colour_name(tuple(palette[3 * index : 3 * index + 3]))
        if count / total >= MIN_SHARE and name not in names:
            names.append(name)
    return names[:MAX_COLOURS]


def colour_phrase(names: list[str]) -> str:
    """'navy blue, orange and white colour palette' (the brand presets' own wording)."""
    return f"{spoken_list(names)} colour palette" if names else ""


def spoken_list(names: list[str]) -> str:
    """'navy blue, orange and white'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def colour_name(rgb: tuple[int, ...]) -> str:
    """The nearest common colour name (CIELAB distance)."""
    target = to_lab(rgb)
    return min(NAMED_COLOURS, key=lambda named: _distance(target, to_lab(named[1])))[0]


def _background_index(quantized: Image.Image) -> int | None:
    """The palette index of a plain white or near-white background: the colour filling at least BACKGROUND_SHARE of
    the border, when it is whitish. (A coloured badge's ground is one of the brand's colours, and stays.)"""
    width, height = quantized.size
    border = [quantized.getpixel((x, y)) for x in range(width) for y in (0, height - 1)]
    border += [quantized.getpixel((x, y)) for y in range(height) for x in (0, width - 1)]
    index, count = Counter(border).most_common(1)[0]
    palette = quantized.getpalette() or []
    lightness, a, b = to_lab(tuple(palette[3 * int(index) : 3 * int(index) + 3]))
    whitish = lightness > WHITISH_LIGHTNESS and (a * a + b * b) ** 0.5 < WHITISH_CHROMA
    return int(index) if whitish and count / len(border) >= BACKGROUND_SHARE else None


def to_lab(rgb: tuple[int, ...]) -> tuple[float, float, float]:
    """sRGB (0-255) to CIELAB under D65."""
    linear = [_linear(channel / 255) for channel in rgb[:3]]
    x = (0.4124 * linear[0] + 0.3576 * linear[1] + 0.1805 * linear[2]) / 0.95047
    y = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    z = (0.0193 * linear[0] + 0.1192 * linear[1] + 0.9505 * linear[2]) / 1.08883
    fx, fy, fz = (_lab_f(value) for value in (x, y, z))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def _linear(channel: float) -> float:
    return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4


def _lab_f(value: float) -> float:
    return value ** (1 / 3) if value > (6 / 29) ** 3 else value / (3 * (6 / 29) ** 2) + 4 / 29


def _distance(first: tuple[float, float, float], second: tuple[float, float, float]) -> float:
    return sum((a - b) ** 2 for a, b in zip(first, second, strict=True))
