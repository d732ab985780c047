"""The app's start on ZeroGPU hardware as far as a CPU can stand in for it: `python -m tests.support.zero_gpu_hardware
DATA_DIR` loads the tiny model through create_app's own loader and prints the worker's state and the decoder's device.

ZeroGPU's app process has a CUDA build of torch and no GPU: `spaces`, imported with SPACES_ZERO_GPU set, then patches
torch to emulate CUDA there (a tensor moved "to cuda" stays in host memory until a @spaces.GPU call moves it, and
torch's real CUDA init raises). This CPU build of torch is made to look like that CUDA build first (its CUDA version
and its bad-fork check, which spaces reads on import; its CUDA init raises as the absent GPU's would), so that the
real `spaces` package runs its ZeroGPU import. Run in a process of its own: the patches hold for the whole process.
"""

from __future__ import annotations

import os
import sys


def no_gpu_here() -> None:
    raise RuntimeError("real CUDA initialisation reached: this process has no GPU")


def not_in_a_bad_fork() -> bool:  # module level: spaces asks a forked process, which must unpickle it
    return False


def main(data_dir: str) -> None:
    os.environ["SPACES_ZERO_GPU"] = "true"
    os.environ.setdefault("SPACES_ZERO_DEVICE_API_URL", "http://127.0.0.1:9")  # never called: nothing is generated
    import torch

    torch.version.cuda = "12.4"  # type: ignore[misc]
    torch._C._cuda_init = no_gpu_here
    torch.cuda._is_in_bad_fork = not_in_a_bad_fork
    import spaces  # noqa: F401  (its ZeroGPU import patches torch)

    from app import create_app
    from mascot.settings import load_settings

    app = create_app(load_settings(["--model", "tiny", "--data-dir", data_dir], dict(os.environ)))
    app.worker.start()
    status = app.worker.wait_until_loaded(300)
    device = status.info.device if status.info is not None else None
    print(f"state={status.state.name} device={device} zero_gpu={app.settings.zero_gpu}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
