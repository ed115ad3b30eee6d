"""``python -m benchmarks.gradbench [--replay]``: serve GradBench's protocol on stdin and stdout."""

import argparse
import sys

from . import MODULES
from .protocol import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gradbench", description=__doc__)
    parser.add_argument("--replay", action="store_true",
                        help="the tapegrad-replay variant: record while preparing, time the replay")
    replay = parser.parse_args().replay
    serve(sys.stdin, sys.stdout, MODULES, "tapegrad-replay" if replay else "tapegrad", replay)


if __name__ == "__main__":
    main()
