"""Fetching dataset files with the standard library (medmnist's own download imports torchvision)."""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from mddbench.atomic import replacing
from mddbench.data.dataset import md5sum
from mddbench.errors import DataError


def download(url: str, dest: Path, md5: str | None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically and check its MD5; raise :class:`DataError` on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(dest) as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", leave=False) as bar:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
            if md5 and (got := md5sum(tmp)) != md5:
                raise DataError(f"downloaded {dest.name} has MD5 {got}, expected {md5}; the server sent a bad file, "
                                "try again later or download it by hand")
        return dest
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(f"could not download {url}: {exc}") from exc
