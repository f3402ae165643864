"""mkdocs hook: serve the committed plots of experiments/results/ under results/.

A page refers to `experiments/results/<job>/<name>.png` as
`results/<job>/<name>.png` (relative to docs/), so the site always shows the
committed output of each experiment and the repository holds one copy.
"""

import pathlib

from mkdocs.structure.files import File

_RESULTS = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "results"


def on_files(files, config):
  for png in sorted(_RESULTS.rglob("*.png")):
    rel = png.relative_to(_RESULTS).as_posix()
    files.append(File.generated(config, f"results/{rel}",
                                abs_src_path=str(png)))
  return files
