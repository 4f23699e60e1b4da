"""``python -m lagsplit`` is the ``lagsplit`` command."""
from .cli import main

main()
