"""Every ```python block of README.md and docs/**/*.md runs as written.

The blocks of one page run in order in one namespace (a page is one test), on
real MNIST from $JAXADV_DATA_DIR (see conftest.py), with the tiny sizes the
pages use. A block preceded by the line `<!-- skip -->` is not run (GPU
installs, multi-host launches); blocks in other languages (```bash) never are.
"""

import pathlib
import re
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
SKIP = "<!-- skip -->"
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


def python_blocks(text: str) -> list[tuple[int, str]]:
  """(first line number, code) of each ```python block not marked skip."""
  lines = text.splitlines()
  blocks, i = [], 0
  while i < len(lines):
    m = _FENCE.match(lines[i])
    if not m:
      i += 1
      continue
    fence, lang, start = m.group(2), m.group(3).lower(), i
    i += 1
    body = []
    while i < len(lines) and not lines[i].strip().startswith(fence):
      body.append(lines[i])
      i += 1
    i += 1  # the closing fence
    before = [l.strip() for l in lines[:start] if l.strip()]
    if lang in ("python", "py") and not (before and before[-1] == SKIP):
      blocks.append((start + 2, textwrap.dedent("\n".join(body))))
  return blocks


def test_parser_honours_skip_and_languages():
  text = ("```python\na = 1\n```\n<!-- skip -->\n\n```python\nb = 2\n```\n"
          "```bash\nc\n```\n  ```python\n  d = 4\n  ```\n")
  assert python_blocks(text) == [(2, "a = 1"), (13, "d = 4")]


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p.read_text())]


# Every page's examples (the README's too: about 40 s of training and
# compiles) are marked slow and run by .ci/run's slow line.
@pytest.mark.parametrize(
    "page",
    [pytest.param(p, marks=pytest.mark.slow) for p in PAGES_WITH_CODE],
    ids=[str(p.relative_to(ROOT)) for p in PAGES_WITH_CODE])
def test_page_examples_run(page, monkeypatch):
  monkeypatch.chdir(ROOT)
  namespace = {"__name__": f"docs_{page.stem}"}
  rel = page.relative_to(ROOT)
  for line, code in python_blocks(page.read_text()):
    exec(compile(code, f"{rel}:{line}", "exec"), namespace)  # pylint: disable=exec-used


def test_readme_fits_in_12_kib():
  assert len((ROOT / "README.md").read_bytes()) <= 12288
