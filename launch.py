"""`deepspeed --num_gpus N launch.py ...` (also torchrun, srun, python): the training command, installed as
`jrnet-train`; see jrnet/launch.py."""

import sys

from jrnet.launch import main

if __name__ == "__main__":
    sys.exit(main())
