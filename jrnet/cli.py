"""What every command line of the project shares."""

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The command's usage text as written, and every option's default."""
