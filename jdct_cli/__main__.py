"""``python -m jdct_cli`` (what ``torchrun -m jdct_cli train ...`` runs)."""
from .cli import main

if __name__ == "__main__":
    main()
