"""Execute every notebook under the given folder (nbclient) and fail on the first error.
Notebooks assert their own key numbers; QDRIFT_NOTEBOOK_SMALL=1 asks them for small sizes."""
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient


def main(folder: str) -> int:
    os.environ.setdefault("QDRIFT_NOTEBOOK_SMALL", "1")
    paths = sorted(pathlib.Path(folder).glob("*.ipynb"))
    if not paths:
        print(f"no notebooks under {folder}")
        return 1
    for path in paths:
        t0 = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        print(f"ok  {path}  ({time.perf_counter() - t0:.1f} s)")
    print(f"{len(paths)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "notebooks"))
