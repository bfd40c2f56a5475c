"""The seed article's whereami manifests (WALKTHROUGH.md §3.5.1 and §3.5.2), exactly as it applies them; the
walkthrough script applies the same files."""

from pathlib import Path

SEED_DIR = Path(__file__).resolve().parent.parent / "scripts" / "seed"
WHEREAMI_CS = (SEED_DIR / "whereami-cs.yaml").read_text()
WHEREAMI_SS = (SEED_DIR / "whereami-ss.yaml").read_text()
