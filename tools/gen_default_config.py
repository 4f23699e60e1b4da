"""Regenerate configs/default.toml from the config models (their docstrings are the documentation)."""
from pathlib import Path

from lagsplit.config import render_default_toml

if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "configs" / "default.toml"
    path.write_text(render_default_toml())
    print(f"wrote {path}")
