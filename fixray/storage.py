"""Where a sweep's Tune state, checkpoints and figures live: a local folder, or a bucket every node reaches.

Everything fixray reads or writes there goes through pyarrow's filesystem layer (the one Ray Tune and
Ray Train use), never as a local path, so a sweep on a cluster works the same with `s3://`, `gs://` or a
folder that every node mounts (NFS).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs

URI_SCHEMES = ("s3", "gs", "gcs")  # buckets pyarrow reaches; anything else is a local (or mounted) folder
DRIVER_DIR_ENV = "FIXRAY_DRIVER_DIR"  # where a driver keeps its lock and spool when the storage is a bucket
DRIVER_DIR_DEFAULT = Path("~/.fixray/sweeps")  # ... when that variable is unset
FULL_BELOW_BYTES = 1 << 20  # a local storage with less free space than this (1 MiB) is full: no checkpoint fits


def is_uri(location: str) -> bool:
    """Whether a storage_path names a bucket (s3://, gs://) rather than a folder."""
    return urlsplit(location).scheme in URI_SCHEMES


@functools.lru_cache(maxsize=16)
def _bucket(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem and the root path inside it; one client per URI (an S3 client is slow to make)."""
    return pyarrow.fs.FileSystem.from_uri(uri)


class Storage:
    """A sweep storage root: paths inside it, and the few reads and writes fixray makes there itself."""

    def __init__(self, location: str) -> None:
        if is_uri(location):
            self.fs, self.root = _bucket(location)
            self.location = location
        else:  # made absolute: trials run in folders of their own
            self.fs, self.root = pyarrow.fs.LocalFileSystem(), str(Path(location).expanduser().resolve())
            self.location = self.root

    def path(self, *parts: str) -> str:
        """A path inside the filesystem (what Ray's storage_path takes beside storage_filesystem)."""
        return "/".join([self.root.rstrip("/"), *parts])

    def shown(self, *parts: str) -> str:
        """The same place as a person would type it: the URI without its options, or the local path."""
        if not is_uri(self.location):
            return self.path(*parts)
        scheme = urlsplit(self.location).scheme
        return f"{scheme}://" + self.path(*parts)

    def relative(self, fs_path: str) -> list[str]:
        """A path inside the filesystem as folder names below the root (to rebuild it with `path`)."""
        root = self.root.rstrip("/") + "/"
        if not fs_path.startswith(root):
            raise ValueError(f"{fs_path} is not under {self.root}")
        return [part for part in fs_path[len(root) :].split("/") if part]

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pyarrow.fs.FileType.NotFound

    def is_dir(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type == pyarrow.fs.FileType.Directory

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as stream:
            return stream.read()

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts[:-1]), recursive=True)
        with self.fs.open_output_stream(self.path(*parts)) as stream:
            stream.write(data)

    def write_text(self, text: str, *parts: str) -> None:
        self.write_bytes(text.encode(), *parts)

    def write_whole(self, data: bytes, *parts: str) -> None:
        """Writes a file whole or not at all (a full disk leaves the old one): a temporary file, then a move."""
        temporary = parts[:-1] + (f".{parts[-1]}.{os.getpid()}.tmp",)
        try:
            self.write_bytes(data, *temporary)
        except OSError:
            self.fs.delete_file(self.path(*temporary))  # what part of it got written
            raise
        self.fs.move(self.path(*temporary), self.path(*parts))

    def listing(self, *parts: str) -> list[pyarrow.fs.FileInfo]:
        """The entries directly inside a folder (none if it is missing)."""
        selector = pyarrow.fs.FileSelector(self.path(*parts), allow_not_found=True)
        return self.fs.get_file_info(selector)

    def delete_dir(self, fs_path: str) -> None:
        self.fs.delete_dir(fs_path)

    @contextmanager
    def local_copy(self, fs_path: str) -> Iterator[Path]:
        """A folder of the storage as a local folder (downloaded from a bucket, as it is when local)."""
        if not is_uri(self.location):
            yield Path(fs_path)
            return
        with tempfile.TemporaryDirectory(prefix="fixray-") as folder:
            pyarrow.fs.copy_files(fs_path, folder, source_filesystem=self.fs)
            yield Path(folder)

    def full(self) -> bool:
        """Whether a local storage has less than FULL_BELOW_BYTES free (a bucket is never full)."""
        if is_uri(self.location):
            return False
        folder = Path(self.root)
        while not folder.exists():
            folder = folder.parent
        return shutil.disk_usage(folder).free < FULL_BELOW_BYTES

    def check(self) -> None:
        """Raises OSError if a bucket cannot be reached or does not exist (before anything starts)."""
        if not is_uri(self.location):
            return
        bucket = self.root.split("/", 1)[0]
        if self.fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound:
            raise FileNotFoundError(f"bucket {bucket!r} does not exist")

    def driver_dir(self, name: str) -> Path:
        """A local folder for what only the driver touches (its lock, its spool of MLflow writes).

        Local storage keeps them in the sweep's own folder; a bucket has no locks or appends, so they live
        on the driver's disk, under $FIXRAY_DRIVER_DIR (else ~/.fixray/sweeps), named after the bucket path.
        """
        if not is_uri(self.location):
            return Path(self.path(name))
        base = Path(os.environ.get(DRIVER_DIR_ENV) or DRIVER_DIR_DEFAULT).expanduser()
        return base / urlsplit(self.location).scheme / self.path(name)
