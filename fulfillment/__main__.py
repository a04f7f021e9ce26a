"""python -m fulfillment"""

from .cli import main

main()
