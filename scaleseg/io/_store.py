"""Locations: local paths and fsspec URLs, opened through zarr stores (read-only by default)."""

from __future__ import annotations

import re
from pathlib import Path

import zarr

from ..files import is_remote

__all__ = [
    "is_remote",
    "join_url",
    "url_name",
    "open_group",
    "location_exists",
    "list_child_groups",
    "safe_name",
]


def _local_path(url: str | Path) -> Path:
    s = str(url)
    if s.startswith("file://"):
        s = s[len("file://") :]
    return Path(s)


def join_url(url: str | Path, *parts: str) -> str:
    """Join path components onto a local path or URL."""
    if is_remote(url):
        base = str(url).rstrip("/")
        return "/".join([base, *[p.strip("/") for p in parts if p]])
    return str(_local_path(url).joinpath(*[p for p in parts if p]))


def url_name(url: str | Path) -> str:
    """The last component of a path or URL (``.../plate.zarr/A/1/0`` -> ``0``)."""
    return str(url).rstrip("/").rsplit("/", 1)[-1]


def safe_name(name: str) -> str:
    """A name taken from user data made safe to use as one path component."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    if not cleaned:
        raise ValueError(f"cannot make a file name from {name!r}")
    return cleaned[:200]


def _store(url: str | Path, *, read_only: bool):
    if is_remote(url):
        try:
            return zarr.storage.FsspecStore.from_url(str(url), read_only=read_only)
        except (ImportError, ValueError, KeyError) as exc:
            raise ValueError(
                f"cannot open {url}: {exc}. Remote URLs need the matching fsspec backend "
                "(e.g. `pip install s3fs` for s3://)."
            ) from None
    return zarr.storage.LocalStore(_local_path(url), read_only=read_only)


def open_group(url: str | Path, *, mode: str = "r", zarr_format: int | None = None) -> zarr.Group:
    """Open a zarr group; ``mode="r"`` (the default) opens the store read-only.

    Raises
    ------
    FileNotFoundError
        When nothing is at ``url``.
    ValueError
        When ``url`` exists but is not a zarr group.
    """
    if mode == "r":
        if not is_remote(url) and not _local_path(url).exists():
            raise FileNotFoundError(f"{url}: no such file or directory")
        try:
            return zarr.open_group(_store(url, read_only=True), mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
            raise ValueError(f"{url} is not a zarr group (no zarr.json / .zgroup found)") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{url}: cannot read zarr metadata ({exc})") from None
        except Exception as exc:  # remote back-ends: credentials, network, permissions
            raise ValueError(f"cannot open {url}: {type(exc).__name__}: {exc}") from None
    return zarr.open_group(_store(url, read_only=False), mode=mode, zarr_format=zarr_format)


def location_exists(url: str | Path) -> bool:
    """Whether anything exists at ``url``."""
    if is_remote(url):
        import fsspec

        fs, path = fsspec.core.url_to_fs(str(url))
        return fs.exists(path)
    return _local_path(url).exists()


def list_child_groups(url: str | Path) -> list[str]:
    """URLs of the direct children of ``url`` that are zarr groups, sorted by name."""
    if is_remote(url):
        import fsspec

        fs, path = fsspec.core.url_to_fs(str(url))
        names = sorted(
            p.rstrip("/").rsplit("/", 1)[-1]
            for p in fs.ls(path, detail=False)
            if fs.isdir(p)
            and (fs.exists(p.rstrip("/") + "/zarr.json") or fs.exists(p.rstrip("/") + "/.zgroup"))
        )
        return [join_url(url, n) for n in names]
    root = _local_path(url)
    if not root.is_dir():
        raise FileNotFoundError(f"{url}: not a directory")
    return [
        str(p)
        for p in sorted(root.iterdir())
        if p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zgroup").is_file())
    ]
