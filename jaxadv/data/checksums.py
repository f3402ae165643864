"""SHA-256 verification of the raw dataset files.

Every raw file is checked against known digests (`KNOWN_SHA256`, or a
``SHA256SUMS`` file in the data folder) before it is parsed.
"""

from __future__ import annotations

import hashlib
import os

from etils import epath

#: Name of the optional checksum file (``sha256sum`` format) in a data folder.
SHA256SUMS_FILENAME = "SHA256SUMS"

#: Accepted SHA-256 digests of raw files, keyed by ``<dataset>/<file name>``.
#: For the IDX files two digests are accepted: the file as served by the
#: canonical URL (digest from the tfds checksum registry) and the re-gzipped
#: copy in the shared data folder (same content, different gzip header and
#: compression level).
KNOWN_SHA256: dict[str, tuple[str, ...]] = {
    "mnist/train-images-idx3-ubyte.gz": (
        "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "mnist/train-labels-idx1-ubyte.gz": (
        "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "mnist/t10k-images-idx3-ubyte.gz": (
        "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "mnist/t10k-labels-idx1-ubyte.gz": (
        "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
    "fashion_mnist/train-images-idx3-ubyte.gz": (
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    ),
    "fashion_mnist/train-labels-idx1-ubyte.gz": (
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    ),
    "fashion_mnist/t10k-images-idx3-ubyte.gz": (
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    ),
    "fashion_mnist/t10k-labels-idx1-ubyte.gz": (
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
    "cifar10/cifar-10-python.tar.gz": (
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
    "cifar10_jpeg/cifar10_jpeg.zip": (
        "42965d26d1d6aa5e045c0ed428e25f0ff14acc5bf087afab86818805ca8dc64e",
    ),
}

def sha256_of_file(
    path: os.PathLike[str] | str, chunk_bytes: int = 1 << 20
) -> str:
  """Returns the SHA-256 hex digest of a file.

  Args:
    path: File to hash.
    chunk_bytes: Read size in bytes.

  Returns:
    Lower-case hex digest (64 characters).
  """
  digest = hashlib.sha256()
  with open(os.fspath(path), "rb") as f:
    while chunk := f.read(chunk_bytes):
      digest.update(chunk)
  return digest.hexdigest()


def read_sha256sums(path: os.PathLike[str] | str) -> dict[str, str]:
  """Parses a ``sha256sum``-style file into ``{relative path: digest}``.

  Lines look like ``<64 hex digits>  <relative path>`` (a ``*`` before the
  path, binary mode, is accepted). Blank lines and ``#`` comments are
  skipped; malformed lines raise.

  Args:
    path: The ``SHA256SUMS`` file.

  Returns:
    Mapping from the path as written (``/`` separators, no leading ``./``)
    to the lower-case digest.

  Raises:
    ValueError: If a line is malformed.
  """
  sums: dict[str, str] = {}
  text = epath.Path(path).read_text()
  for lineno, line in enumerate(text.splitlines(), start=1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    parts = line.split(maxsplit=1)
    digest = parts[0].lower()
    if (
        len(parts) != 2
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
      raise ValueError(f"{path}:{lineno}: malformed SHA256SUMS line: {line!r}")
    name = parts[1].strip().lstrip("*").replace("\\", "/")
    while name.startswith("./"):
      name = name[2:]
    sums[name] = digest
  return sums


def expected_sha256(
    dataset: str, filename: str, folder: os.PathLike[str] | str | None
) -> tuple[tuple[str, ...], str]:
  """Returns the accepted digests of a raw file and where they come from.

  A ``SHA256SUMS`` file takes precedence over the hard-coded digests:
  ``<folder>/SHA256SUMS`` listing ``<filename>``, then
  ``<folder>/../SHA256SUMS`` listing ``<dataset>/<filename>`` (the layout of
  ``$JAXADV_DATA_DIR``). Otherwise `KNOWN_SHA256` is used.

  Args:
    dataset: Public dataset name, e.g. ``"mnist"``.
    filename: Raw file name, e.g. ``"t10k-images-idx3-ubyte.gz"``.
    folder: Folder holding the raw file, or None for a downloaded file.

  Returns:
    ``(digests, source)``: the accepted lower-case hex digests (possibly
    empty when the file is unknown) and a human-readable source.
  """
  if folder is not None:
    folder = epath.Path(folder)
    candidates = (
        (folder / SHA256SUMS_FILENAME, filename),
        (folder.parent / SHA256SUMS_FILENAME, f"{dataset}/{filename}"),
    )
    for sums_path, key in candidates:
      if sums_path.is_file():
        sums = read_sha256sums(sums_path)
        if key in sums:
          return (sums[key],), os.fspath(sums_path)
  return (
      KNOWN_SHA256.get(f"{dataset}/{filename}", ()),
      "jaxadv.data.checksums.KNOWN_SHA256",
  )


def verify_sha256(
    path: os.PathLike[str] | str,
    dataset: str,
    filename: str,
    folder: os.PathLike[str] | str | None,
) -> str:
  """Checks a raw file against its accepted SHA-256 digests.

  Args:
    path: The file to check.
    dataset: Public dataset name, e.g. ``"mnist"``.
    filename: Raw file name used to look up the digest.
    folder: Folder in which to look for ``SHA256SUMS`` (see
      `expected_sha256`), or None.

  Returns:
    The actual digest.

  Raises:
    ValueError: If the digest is not an accepted one; the message names the
      file, the expected and the actual digest.
  """
  expected, source = expected_sha256(dataset, filename, folder)
  actual = sha256_of_file(path)
  if actual not in expected:
    raise ValueError(
        f"SHA-256 mismatch for {os.fspath(path)}: expected "
        f"{' or '.join(expected) if expected else '<no known digest>'} "
        f"(from {source}), actual {actual}. The file is corrupt, truncated "
        "or not the expected file; delete it and get a fresh copy (or, for "
        "a deliberately different file, list its digest in a "
        f"{SHA256SUMS_FILENAME} file next to it)."
    )
  return actual
