"""Builds the C++ kernels for every x86-64 level of `PORTABLE` into a directory, for machines
that will have no compiler (a container image's final stage reads them through
$SLUICE_KERNELS_DIR):

    python -m sluice.model.kernels.prebuild DIRECTORY [LEVEL ...]"""

import argparse
from pathlib import Path

from sluice.model.kernels import PORTABLE, write_portable_kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("levels", nargs="*", help=f"of {', '.join(PORTABLE)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.levels) - set(PORTABLE)
    if unknown:
        parser.error(f"unknown levels: {', '.join(sorted(unknown))}")
    levels = args.levels or list(PORTABLE)
    for path in write_portable_kernels(args.directory, levels):
        print(path)


if __name__ == "__main__":
    main()
