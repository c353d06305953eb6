"""``python -m posestream``: the ``posestream`` command line."""
import sys

from posestream.stream.cli import main

if __name__ == "__main__":
    sys.exit(main())
