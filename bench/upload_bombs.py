"""Benchmark: what picture bombs cost the server, measured in a fresh subprocess per case (peak RSS, seconds).

    python -m bench.upload_bombs                        # this checkout
    python -m bench.upload_bombs --code /work/main      # another checkout of the app, e.g. before a change

Cases: three 8 KB 8192x8192 1-bit PNGs kept as logos at the same time (threads, as three requests would be); three
4096x4096 ones (the largest size read); one 20000x20000 PNG; three PNGs dropped to remix; one animated PNG of 600
frames of 4096x4096 dropped to remix (PIL's `.text` decodes every frame). Each line gives the peak
resident memory of the subprocess (ru_maxrss), its growth over the baseline after imports, the seconds, and what a
person would be told.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {  # what is read, its side, how many at once, its frames
    "3 logos 8192x8192 at once": ("logo", 8192, 3, 1),
    "3 logos 4096x4096 at once": ("logo", 4096, 3, 1),
    "1 logo 20000x20000": ("logo", 20000, 1, 1),
    "3 recipes 4096x4096 at once": ("recipe", 4096, 3, 1),
    "1 recipe, 600 frames 4096x4096": ("recipe", 4096, 1, 600),
}

# Run in the subprocess with `code` first on sys.path: only the modules both versions have (LogoLibrary, _png_text).
PROBE = textwrap.dedent(
    """
    import json, resource, sys, threading, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from mascot.prompt.logos import LogoLibrary
    from mascot.service import actions
    kind, picture, copies, folder = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
    library = LogoLibrary(folder)
    answers = []
    def read() -> None:
        try:
            answers.append(library.save(picture) if kind == "logo" else str(actions._png_text(picture)))
        except Exception as error:
            answers.append(f"{type(error).__name__}: {error}")
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    threads = [threading.Thread(target=read) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": peak / 1024, "growth_mb": (peak - baseline) / 1024,
                      "seconds": time.perf_counter() - started, "answer": answers[0][:110]}))
    """
)


def measure(code: Path, kind: str, side: int, copies: int, frames: int, scratch: Path) -> dict[str, object]:
    """One case in a fresh interpreter, so that each peak is its own."""
    from tests.support.bombs import animated_png_bomb, png_bomb

    name = scratch / f"bomb-{side}-{frames}.png"
    picture = png_bomb(name, side, side) if frames == 1 else animated_png_bomb(name, side, frames)
    command = [sys.executable, "-c", PROBE, str(code), kind, str(picture), str(copies), str(scratch / "logos")]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=scratch)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose mascot package is measured")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name, (kind, side, copies, frames) in CASES.items():
            found = measure(arguments.code.resolve(), kind, side, copies, frames, Path(folder))
            print(
                f"{name:30} peak {found['peak_mb']:7.0f} MB (+{found['growth_mb']:6.0f}) "
                f"{found['seconds']:6.2f} s  {found['answer']}"
            )


if __name__ == "__main__":
    main()
