"""``python -m benchmarks.gradbench [--replay [--optimize]]``: serve GradBench's protocol on stdin
and stdout."""

import argparse
import sys

from . import MODULES, programs
from .protocol import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gradbench", description=__doc__)
    parser.add_argument("--replay", action="store_true",
                        help="the tapegrad-replay variant: record while preparing, time the replay")
    parser.add_argument("--optimize", action="store_true",
                        help="with --replay, the tapegrad-replay-opt variant: the tape passes run on "
                        "the recording")
    args = parser.parse_args()
    if args.optimize and not args.replay:
        parser.error("--optimize applies to the tape of --replay")
    programs.PASSES = args.optimize
    name = "tapegrad-replay-opt" if args.optimize else "tapegrad-replay" if args.replay else "tapegrad"
    serve(sys.stdin, sys.stdout, MODULES, name, args.replay)


if __name__ == "__main__":
    main()
