import sys
from pathlib import Path

# A bare checkout (no editable install) still imports the package under test.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
