"""Test configuration: real data comes from $JAXADV_DATA_DIR.

When the variable is unset, `<repo>/../shared/data` is used if it exists
(the layout of CI and the development machines).
"""

import os
import pathlib

_DEFAULT = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
if "JAXADV_DATA_DIR" not in os.environ and _DEFAULT.is_dir():
  os.environ["JAXADV_DATA_DIR"] = str(_DEFAULT.resolve())
