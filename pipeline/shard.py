"""`python pipeline/shard.py DATASET ...` (installed as `jrnet-shard`): the command of jrnet/prep/shard.py."""

import sys

from jrnet.prep.shard import main

if __name__ == "__main__":
    sys.exit(main())
