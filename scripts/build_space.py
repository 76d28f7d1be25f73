"""Make `space/` a complete Hub Space: the `lary` package (built from this checkout) in the folder, and
`requirements.txt` naming what it needs from PyPI. Run it before uploading the folder:

    python scripts/build_space.py                 # or --space DIR
    hf upload AGI-Eval/LAPA-DINOv3-latent-actions space/ . --repo-type space

The package goes into the folder itself (`lary/`, `lary_hub/` with the embedded model, `lary-VERSION.dist-info/`:
the wheel's contents, about 2 MB), not into `requirements.txt` as a wheel file: a Space installs `requirements.txt`
before it copies the rest of the repository, so a local wheel named there would not be found; `app.py` imports
`lary` from its own folder. `requirements.txt` is lary's dependencies with the `app` extra (gradio), read from the
wheel's metadata, so it follows `pyproject.toml`. The copied package is not committed (`space/.gitignore`).
"""

from __future__ import annotations

import argparse
import email
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXTRA = "app"  # lary's extra that the page needs
HEADER = """\
# Written by scripts/build_space.py: lary's dependencies (with its `{extra}` extra). The lary package itself is in
# this folder (lary/, lary_hub/), built from the repository by that script: run it before uploading the folder.
"""


def build_wheel(out: Path) -> Path:
    """`pip wheel` of this checkout (no dependencies) into `out`."""
    # setuptools stages the package in build/ and never deletes from it (a module removed since would be shipped):
    # the staging is removed before and after
    shutil.rmtree(REPO_ROOT / "build", ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "--quiet", "-w", str(out)],
                       check=True)
    finally:
        shutil.rmtree(REPO_ROOT / "build", ignore_errors=True)
    return next(out.glob("lary-*.whl"))


def requirements(wheel: Path) -> list[str]:
    """The wheel's `Requires-Dist` for a plain install plus the `app` extra, without markers of the extra."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        metadata_name = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(metadata_name))
    lines = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": EXTRA}):
            requirement.marker = None
            lines.append(str(requirement))
    return lines


def build_space(space: Path) -> Path:
    """Put the package into `space` (replacing an earlier copy) and write its `requirements.txt`."""
    for old in [space / "lary", space / "lary_hub", *space.glob("lary-*.dist-info")]:
        shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory() as folder:
        wheel = build_wheel(Path(folder))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(space)
        lines = requirements(wheel)
    (space / "requirements.txt").write_text(HEADER.format(extra=EXTRA) + "\n".join(lines) + "\n")
    return space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", type=Path, default=REPO_ROOT / "space", help="the Space folder (default: space/)")
    args = parser.parse_args()
    if not (args.space / "app.py").is_file():
        raise SystemExit(f"{args.space}: no app.py here; --space is the Space folder (the repository's space/)")
    build_space(args.space)
    print(f"{args.space}: the lary package and requirements.txt; upload the folder to the Space")


if __name__ == "__main__":
    main()
