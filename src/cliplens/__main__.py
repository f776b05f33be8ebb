"""``python -m cliplens …`` runs the command line (what ``torchrun … -m cliplens store build …`` needs)."""

from cliplens.cli import main

if __name__ == "__main__":
    main()
