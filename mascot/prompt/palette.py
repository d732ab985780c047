"""The main colours of a logo, by name: what the brand choice "Colours of my logo" adds to the prompt. The text
encoder knows "navy blue" and "orange", not #1F2A5C, so each colour is named after the nearest of a few dozen common
colour names, measured in CIELAB, where distances follow what people see."""

from __future__ import annotations

from collections import Counter, deque

import numpy as np
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
    """Up to MAX_COLOURS names of the logo's main colours, the commonest first. A white background (whitish pixels
    joined to the border; a transparent one was flattened to white when the logo was kept) is not one of them, unless
    the logo is nothing else; white inside the logo is.

    Each pixel is named on its own and the names are counted. Averaging similar pixels first (median cut) blended a
    thin orange ring with the navy and the anti-aliased edge between them into "brown", a colour the logo lacks."""
    small = image.convert("RGB")
    # Nearest-neighbour sampling keeps the logo's own colours: a smoothing filter would invent edge mixtures.
    scale = WORKING_SIDE / max(small.size)
    if scale < 1:
        small = small.resize((max(1, round(small.width * scale)), max(1, round(small.height * scale))), Image.NEAREST)
    pixels = np.asarray(small, dtype=np.float64)
    lab = _lab_array(pixels)
    names = _nearest_names(lab)
    background = _border_background(lab)
    own = names[~background] if (~background).any() else names.ravel()
    counts = Counter(own.tolist())
    total = sum(counts.values())
    return [NAMED_COLOURS[index][0] for index, count in counts.most_common() if count / total >= MIN_SHARE][
        :MAX_COLOURS
    ]


def _nearest_names(lab: np.ndarray) -> np.ndarray:
    """The index in NAMED_COLOURS of each pixel's nearest named colour (CIELAB distance)."""
    distances = ((lab[:, :, None, :] - _NAMED_LAB[None, None, :, :]) ** 2).sum(axis=-1)
    return np.asarray(distances.argmin(axis=-1))


def _border_background(lab: np.ndarray) -> np.ndarray:
    """True where a whitish pixel is joined to the border through whitish pixels: the paper the logo sits on."""
    chroma = np.hypot(lab[:, :, 1], lab[:, :, 2])
    whitish = (lab[:, :, 0] > WHITISH_LIGHTNESS) & (chroma < WHITISH_CHROMA)
    height, width = whitish.shape
    reached = np.zeros_like(whitish)
    border = [(y, x) for x in range(width) for y in (0, height - 1)] + [
        (y, x) for y in range(height) for x in (0, width - 1)
    ]
    queue = deque(point for point in border if whitish[point])
    for point in queue:
        reached[point] = True
    while queue:
        y, x = queue.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < height and 0 <= nx < width and whitish[ny, nx] and not reached[ny, nx]:
                reached[ny, nx] = True
                queue.append((ny, nx))
    # A border that is mostly not whitish is a coloured badge's ground: it is one of the brand's colours and stays.
    edge = np.concatenate([reached[0], reached[-1], reached[:, 0], reached[:, -1]])
    return reached if edge.mean() >= BACKGROUND_SHARE else np.zeros_like(reached)


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


def to_lab(rgb: tuple[int, ...]) -> tuple[float, float, float]:
    """sRGB (0-255) to CIELAB under D65."""
    linear = [_linear(channel / 255) for channel in rgb[:3]]
    x = (0.4124 * linear[0] + 0.3576 * linear[1] + 0.1805 * linear[2]) / 0.95047
    y = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    z = (0.0193 * linear[0] + 0.1192 * linear[1] + 0.9505 * linear[2]) / 1.08883
    fx, fy, fz = (_lab_f(value) for value in (x, y, z))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def _lab_array(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0-255, ...x3) to CIELAB under D65, for many pixels at once; the same formulas as `to_lab`."""
    channel = rgb / 255
    linear = np.where(channel <= 0.04045, channel / 12.92, ((channel + 0.055) / 1.055) ** 2.4)
    r, g, b = linear[..., 0], linear[..., 1], linear[..., 2]
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
    limit = (6 / 29) ** 3
    fx, fy, fz = (np.where(v > limit, np.cbrt(v), v / (3 * (6 / 29) ** 2) + 4 / 29) for v in (x, y, z))
    return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def _linear(channel: float) -> float:
    return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4


def _lab_f(value: float) -> float:
    return value ** (1 / 3) if value > (6 / 29) ** 3 else value / (3 * (6 / 29) ** 2) + 4 / 29


def _distance(first: tuple[float, float, float], second: tuple[float, float, float]) -> float:
    return sum((a - b) ** 2 for a, b in zip(first, second, strict=True))


_NAMED_LAB = np.array([to_lab(rgb) for _, rgb in NAMED_COLOURS])
