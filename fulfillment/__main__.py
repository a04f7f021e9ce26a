"""python -m fulfillment"""

from .ops.cli import main

main()
