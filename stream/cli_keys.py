"""Make the CurveZMQ key pairs of a pipeline and of the remote workers, captures and subscribers it accepts.

  posestream keys DIR                      the pipeline's pair (server) and one worker's (worker)
  posestream keys DIR --worker gpu1 --worker gpu2

Writes, in DIR: server.key / server.key_secret (kept when they exist), NAME.key / NAME.key_secret
for every --worker NAME (an inference worker, a remote capture or a keypoints subscriber: each
has its own pair), and a copy of each worker's public key in DIR/authorized/ (the pipeline
accepts exactly the workers whose public keys are there; delete one to refuse that worker).
What goes where:

  pipeline host:  DIR/server.key_secret and DIR/authorized/   (config: listen, keys: DIR)
  worker host:    DIR/NAME.key_secret and DIR/server.key
                  (posestream worker --connect tcp://PIPELINE:PORT --keys DIR --name NAME)

Secret files are mode 0600; an existing worker pair is never overwritten.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="folder for the keys (created when missing)")
    p.add_argument("--worker", action="append", default=None, metavar="NAME",
                   help="a worker's key pair to make and authorize (repeatable; default: one named 'worker')")


def run(args: argparse.Namespace) -> int:
    from .secure import SERVER, KeyFileError, make_pair

    d = Path(args.dir)
    names = args.worker or ["worker"]
    for n in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", n) or n == SERVER:
            print(f"posestream keys: error: --worker {n!r}: a name of letters, digits, '_', '.', '-' "
                  f"(not {SERVER!r})", file=sys.stderr)
            return 2
    try:
        if not (d / f"{SERVER}.key_secret").exists():
            make_pair(d, SERVER)
            print(f"posestream keys: {d / (SERVER + '.key_secret')} (the pipeline's; keep it on its host)")
        else:
            print(f"posestream keys: {d / (SERVER + '.key_secret')} exists: kept")
        (d / "authorized").mkdir(exist_ok=True)
        for n in names:
            pub, sec = make_pair(d, n)
            shutil.copyfile(pub, d / "authorized" / pub.name)
            print(f"posestream keys: {sec} (worker {n}'s; copy it and {d / (SERVER + '.key')} to its host), "
                  f"authorized in {d / 'authorized'}")
    except KeyFileError as e:
        print(f"posestream keys: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"posestream keys: error: {d}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0
