"""What every command line of the project shares."""

import argparse
import atexit
import gc


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The command's usage text as written, and every option's default."""


def skip_final_collection() -> None:
    """Freeze every object at exit, so that the interpreter's last garbage collections skip them.

    Those collections walk every object torch, torchvision and DeepSpeed created (about 470,000 in a training
    rank), only for the OS to free the memory a moment later: 1.9 s of each process's exit (BENCHMARKS.md 11).
    atexit callbacks run before them; registered once per process, however often a test calls a main().
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
