import sys

from .cli import main

sys.exit(main(["worker", *sys.argv[1:]]))
