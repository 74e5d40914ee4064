"""Draw docs/gallery.png: one simulated example per quality kind (and BIAS / FLAT frames).

    .venv/bin/python -m benchmarks.make_gallery [--severities 0.2 0.8] [--out docs/gallery.png]
"""
import argparse
from pathlib import Path


from desom.simulate.gallery import make_gallery  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "gallery.png"))
    ap.add_argument("--severities", type=float, nargs="+", default=[0.2, 0.8])
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    print(make_gallery(a.out, severities=tuple(a.severities), seed=a.seed))
