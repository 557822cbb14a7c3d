"""`python slurm/submit.py ...`: submit training to Slurm through submitit, installed as `jrnet-submit`;
see jrnet/submit.py."""

import sys

from jrnet.submit import main

if __name__ == "__main__":
    sys.exit(main())
