"""Where each dataset comes from, and getting it: mirror or network, always checksummed.

Every input file is a :class:`Source`: its canonical URL (the file itself or an archive that
holds it), the published digests, and where a mirror laid out like ``shared/datasets`` keeps
it. :func:`fetch_sources` copies from the mirror when one is set (``AOAFFM_MIRROR`` wins over
the ``mirror`` argument) and otherwise downloads: streamed to ``<name>.part`` with a progress
bar, resumed with HTTP Range after an interruption, retried with backoff, verified, renamed.
A file whose source publishes no digest is recorded with the digest seen and
``"verified": false``; nothing pretends to have checked it.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from tqdm.auto import tqdm

from aoaffm.errors import first_line
from aoaffm.io import atomic_path, read_json, remove_stale_temporaries, write_json

from .archives import is_zip, open_zip
from .errors import DataError

MIRROR_ENV = "AOAFFM_MIRROR"
SOURCES_FILE = "sources.json"
CHUNK_BYTES = 1 << 20
STREAM_BYTES = 1 << 16  # what an interrupted transfer can lose (the .part keeps the rest)


@dataclass(frozen=True)
class Source:
    """One input file. Digests are ``"sha256:<hex>"`` or ``"gitblob:<hex>"`` (git's blob id,
    SHA-1 of ``b"blob <size>\\0" + content``); all that are listed must match."""

    filename: str  # the name the builders read under the raw folder
    url: str  # canonical download: the file itself, or the archive holding ``member``
    digests: tuple[str, ...] = ()  # of the download at ``url``; empty: none published
    member: str | None = None  # path inside the archive at ``url``
    mirror_path: str | None = None  # where a mirror keeps the download at ``url``
    mirror_member_path: str | None = None  # where a mirror keeps ``member`` already extracted
    mirror_member_digests: tuple[str, ...] = ()  # digests published for that extracted copy


GROUPLENS = "https://files.grouplens.org/datasets/movielens"
NFM_DATA = "https://raw.githubusercontent.com/hexiangnan/neural_factorization_machine/master/data"
LIBSVM_CRITEO = (
    "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/criteo.kaggle2014.svm.tar.xz"
)
KAGGLE_CRITEO = (
    "https://go.criteo.net/criteo-research-kaggle-display-advertising-challenge-dataset.tar.gz"
)


def _nfm(folder: str, split: str, mirror_folder: str, *digests: str) -> Source:
    name = f"{folder}.{split}.libfm"
    return Source(
        name, f"{NFM_DATA}/{folder}/{name}", digests, mirror_path=f"{mirror_folder}/{name}"
    )


def _libsvm_criteo(split: str) -> Source:
    return Source(
        f"criteo.kaggle2014.{split}.svm",
        LIBSVM_CRITEO,
        member=f"criteo.kaggle2014.svm/{split}.txt.svm",
        mirror_path="criteo/criteo.kaggle2014.svm.tar.xz",
        mirror_member_path=f"criteo/criteo.kaggle2014.{split}.svm",
    )


# dataset -> variant -> role -> Source. The roles are what the builders ask for.
REGISTRY: dict[str, dict[str, dict[str, Source]]] = {
    "frappe": {
        "raw": {
            "log": Source(
                "Mobile_Frappe.zip",
                "https://www.baltrunas.info/_files/archives/"
                "be17b7_474755a5e9684a749a012516d04fb456.zip?dn=Mobile_Frappe.zip",
                ("sha256:4adc616de57170f282397f6e6e30215f97fa7ad1b7f40bd12ef5dceaaf3e9b4e",),
                mirror_path="frappe/Mobile_Frappe.zip",
            )
        },
        # NFM's validation and test files + a train split rebuilt from the raw log (offline)
        "nfm-rebuilt": {},
        "nfm": {
            "train": _nfm(
                "frappe", "train", "frappe-nfm", "gitblob:176b2aaf1f63dd13d3e66a5c17c8ec8186e91893"
            ),
            "validation": _nfm(
                "frappe",
                "validation",
                "frappe-nfm",
                "gitblob:50b9c04bcf58dcb46d0b0070d3d6f88b45c9baab",
                "sha256:fdf4be563a7dd9b15f7a6e8b32671e90e6e7a2a2bd3af4e10bf13c5ad7e76e9e",
            ),
            "test": _nfm(
                "frappe",
                "test",
                "frappe-nfm",
                "gitblob:d7cdd03f0e2415c97618de617f20bedd50e8fce7",
                "sha256:a2ebaef3a9af8e55f8bb0d08bc4923965e42e43760ebd7635ac2f8c5db99e097",
            ),
        },
    },
    "movielens": {
        "ml10m-tags": {
            # GroupLens publishes no digest for ml-10m.zip; the mirror's extracted tags file
            # (restored to the '::' format) has the digest listed in shared/datasets/README.md.
            "tags": Source(
                "ml-10m-tags.dat",
                f"{GROUPLENS}/ml-10m.zip",
                member="ml-10M100K/tags.dat",
                mirror_path="movielens/ml-10m.zip",
                mirror_member_path="movielens/ml-10m-tags.dat",
                mirror_member_digests=(
                    "sha256:2ac9b3706900ce183af8085a167635128234253ee6b82664184e7f55a962b6ec",
                ),
            )
        },
        "ml-latest-small": {
            "tags": Source(
                "ml-latest-small-tags.csv",
                f"{GROUPLENS}/ml-latest-small.zip",
                member="ml-latest-small/tags.csv",
                mirror_path="movielens/ml-latest-small.zip",
                mirror_member_path="movielens/ml-latest-small-tags.csv",
            )
        },
        "nfm": {
            "train": _nfm(
                "ml-tag",
                "train",
                "movielens-nfm",
                "gitblob:45c9017ca7cb14b3df2b7378f3a935577a8a102f",
            ),
            "validation": _nfm(
                "ml-tag",
                "validation",
                "movielens-nfm",
                "gitblob:0950186b80ca3158f40c3734e28d236785ad77ac",
            ),
            "test": _nfm(
                "ml-tag",
                "test",
                "movielens-nfm",
                "gitblob:aef8f29a1a396d6ea34e692d26eec9bba2f7ae8b",
            ),
        },
    },
    "criteo": {
        "libsvm": {"train": _libsvm_criteo("train"), "test": _libsvm_criteo("test")},
        "kaggle": {
            # Kaggle's test.txt has no labels, so only train.txt is used (split 70/20/10).
            "train": Source(
                "criteo-kaggle-train.txt",
                KAGGLE_CRITEO,
                member="train.txt",
                mirror_path="criteo/dac.tar.gz",
                mirror_member_path="criteo/train.txt",
            )
        },
        "kaggle-sample": {
            "train": Source(
                "criteo_sample.txt",
                "https://raw.githubusercontent.com/shenweichen/DeepCTR/master/examples/"
                "criteo_sample.txt",
                ("sha256:08b84f12a22438fb534e989a5e4fa245726b2bda001983556bc2aea2f094f724",),
                mirror_path="criteo/criteo_sample.txt",
            )
        },
    },
}

REGISTRY["frappe"]["nfm-rebuilt"] = {
    "log": REGISTRY["frappe"]["raw"]["log"],
    "validation": REGISTRY["frappe"]["nfm"]["validation"],
    "test": REGISTRY["frappe"]["nfm"]["test"],
}
DATASETS = tuple(REGISTRY)


def sources_for(dataset: str, variant: str) -> dict[str, Source]:
    """The registry entry; unknown names fail with the valid ones listed."""
    if dataset not in REGISTRY:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {list(REGISTRY)}")
    variants = REGISTRY[dataset]
    if variant not in variants:
        raise DataError(
            f"unknown variant {variant!r} for dataset {dataset!r}; expected one of {list(variants)}"
        )
    return variants[variant]


def source_paths(dataset: str, variant: str, raw_dir: str | os.PathLike) -> dict[str, Path]:
    """Where :func:`fetch_sources` puts each role's file (without fetching anything)."""
    return {role: Path(raw_dir) / s.filename for role, s in sources_for(dataset, variant).items()}


def resolve_mirror(mirror: str | os.PathLike | None = None) -> Path | None:
    """``$AOAFFM_MIRROR`` if set, else the ``mirror`` argument (e.g. params' ``data.mirror``)."""
    chosen = os.environ.get(MIRROR_ENV) or mirror
    if not chosen:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = f"${MIRROR_ENV}" if os.environ.get(MIRROR_ENV) else "the mirror setting"
        raise DataError(f"{origin} names {path}, which is not a folder")
    return path


# --------------------------------------------------------------------------- digests


def file_digests(path: str | os.PathLike) -> dict[str, str]:
    """sha256 and git blob id of a file, in one read."""
    path = Path(path)
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            sha256.update(chunk)
            blob.update(chunk)
    return {"sha256": sha256.hexdigest(), "gitblob": blob.hexdigest()}


def verify(path: Path, expected: tuple[str, ...], label: str) -> dict[str, Any]:
    """Check ``path`` against every expected digest; the provenance record on success."""
    seen = file_digests(path)
    for digest in expected:
        kind, _, value = digest.partition(":")
        if kind not in seen:
            raise DataError(f"{label}: unknown digest kind {kind!r} in {digest!r}")
        if seen[kind] != value.lower():
            raise DataError(
                f"{label}: checksum mismatch ({kind}): expected {value}, got {seen[kind]} "
                f"(a truncated or altered file; it was not kept)"
            )
    return {
        "sha256": seen["sha256"],
        "bytes": path.stat().st_size,
        "verified": bool(expected),
        "expected": list(expected),
    }


# --------------------------------------------------------------------------- network


def download(
    url: str,
    target: str | os.PathLike,
    digests: tuple[str, ...] = (),
    *,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Stream ``url`` to ``target`` through ``<target>.part``; resume, retry, verify, rename.

    A ``.part`` left by an interrupted run is resumed with an HTTP Range request (a server
    that ignores Range restarts it). Only a verified file is renamed onto ``target``; a
    checksum mismatch deletes the ``.part`` so that the next run starts over.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    last_error: Exception | None = None
    done = False
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            _stream(url, part, timeout_s, progress)
            done = True
            break
        except requests.HTTPError as error:
            last_error = error
            status = error.response.status_code if error.response is not None else 0
            if 400 <= status < 500 and status not in (408, 429):
                break  # not found / forbidden: retrying cannot help
        except (requests.RequestException, OSError) as error:
            last_error = error
    if not done:
        raise DataError(
            f"could not download {url} after {attempt + 1} attempt(s) ({last_error}). Without "
            f"network, set {MIRROR_ENV} (or data.mirror in params.yaml) to a folder laid out "
            f"like shared/datasets that holds this file"
        )
    try:
        record = verify(part, digests, target.name)
    except DataError:
        part.unlink()
        raise
    os.replace(part, target)
    return record


def _stream(url: str, part: Path, timeout_s: float, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=timeout_s) as response:
        if response.status_code == 416:  # the .part already holds the whole file
            return
        response.raise_for_status()
        resumed = response.status_code == 206
        if have and not resumed:
            have = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(part, "ab" if resumed else "wb") as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            for chunk in response.iter_content(STREAM_BYTES):
                f.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise requests.ConnectionError(
                f"connection closed after {part.stat().st_size} of {total} bytes"
            )


# --------------------------------------------------------------------------- archives


def extract_member(archive: Path, member: str, target: Path) -> None:
    """Copy one member of a zip or tar archive to ``target`` atomically."""
    label = f"{archive.name}:{member}"
    try:
        if is_zip(archive):
            with open_zip(archive, label) as z, z.open(member) as src, atomic_path(target) as tmp:
                with open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK_BYTES)
            return
        with tarfile.open(archive) as tar:
            src = tar.extractfile(member)
            if src is None:
                raise KeyError(member)
            with src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
    except KeyError:
        raise DataError(f"{label}: the archive has no member {member!r}") from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as error:
        raise DataError(
            f"{label}: damaged or incomplete archive ({first_line(error)}); expected the whole "
            "archive: delete it and run the download stage again"
        ) from None


# --------------------------------------------------------------------------- fetching


def fetch_source(
    source: Source,
    dest_dir: str | os.PathLike,
    mirror: Path | None,
    *,
    progress: bool = True,
    retries: int = 5,
    backoff_s: float = 1.0,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Put ``source.filename`` into ``dest_dir``; returns its provenance record.

    ``previous`` is the record of an earlier fetch: a file that still has that size and
    sha256 is kept rather than fetched again.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / source.filename
    if previous and _unchanged(target, previous):
        return previous
    if mirror is not None:
        record = _from_mirror(source, target, mirror)
    elif source.member is None:
        record = download(
            source.url, target, source.digests, retries=retries, backoff_s=backoff_s,
            progress=progress,
        )  # fmt: skip
        record["origin"] = source.url
    else:
        archive = dest_dir / ".downloads" / Path(source.url.split("?")[0]).name
        if archive.exists():  # downloaded (and verified) for another member already
            archive_record = verify(archive, source.digests, archive.name)
        else:
            archive_record = download(
                source.url, archive, source.digests, retries=retries, backoff_s=backoff_s,
                progress=progress,
            )  # fmt: skip
        extract_member(archive, source.member, target)
        record = _member_record(archive_record, target)
        record["origin"] = f"{source.url} ({source.member})"
    record["url"] = source.url
    return record


def _unchanged(target: Path, record: dict[str, Any]) -> bool:
    if not target.is_file() or target.stat().st_size != record.get("bytes"):
        return False
    return file_digests(target)["sha256"] == record.get("sha256")


def _member_record(archive_record: dict[str, Any], member: Path) -> dict[str, Any]:
    """The extracted member's own sha256, verified only through its verified archive."""
    return {
        "sha256": file_digests(member)["sha256"],
        "bytes": member.stat().st_size,
        "verified": archive_record["verified"],
        "expected": [],
        "archive_sha256": archive_record["sha256"],
        "archive_expected": archive_record["expected"],
    }


def _from_mirror(source: Source, target: Path, mirror: Path) -> dict[str, Any]:
    if source.mirror_path and (mirror / source.mirror_path).is_file():
        held = mirror / source.mirror_path
        record = verify(held, source.digests, f"{mirror_label(mirror, source.mirror_path)}")
        if source.member is None:
            with atomic_path(target) as tmp:
                shutil.copyfile(held, tmp)
        else:
            extract_member(held, source.member, target)
            record = _member_record(record, target)
    elif source.mirror_member_path and (mirror / source.mirror_member_path).is_file():
        held = mirror / source.mirror_member_path
        label = mirror_label(mirror, source.mirror_member_path)
        record = verify(held, source.mirror_member_digests, label)
        with atomic_path(target) as tmp:
            shutil.copyfile(held, tmp)
    else:
        wanted = [p for p in (source.mirror_path, source.mirror_member_path) if p]
        raise DataError(
            f"mirror {mirror} has no {' or '.join(wanted)} (needed for {source.filename}, "
            f"canonical URL {source.url}); add the file there or unset {MIRROR_ENV} to download"
        )
    record["origin"] = str(held)
    return record


def mirror_label(mirror: Path, relative: str) -> str:
    return f"{relative} (mirror {mirror})"


def fetch_sources(
    dataset: str,
    variant: str,
    dest_dir: str | os.PathLike,
    mirror: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    retries: int = 5,
    backoff_s: float = 1.0,
) -> dict[str, Path]:
    """Fetch every file a variant needs into ``dest_dir``; returns role -> path.

    Also writes ``dest_dir/sources.json`` (file name -> sha256, url, verified, origin), which
    :func:`aoaffm.data.build_dataset` copies into ``meta.json``.
    """
    sources = sources_for(dataset, variant)
    mirror_dir = resolve_mirror(mirror)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest_dir)  # copies killed half-way (a .part download resumes)
    listed = dest_dir / SOURCES_FILE
    previous = read_json(listed) if listed.is_file() else {}
    records = {}
    for source in sources.values():
        records[source.filename] = fetch_source(
            source,
            dest_dir,
            mirror_dir,
            progress=progress,
            retries=retries,
            backoff_s=backoff_s,
            previous=previous.get(source.filename),
        )
        write_json(listed, {**previous, **records})
    shutil.rmtree(dest_dir / ".downloads", ignore_errors=True)
    return source_paths(dataset, variant, dest_dir)


def provenance(paths: dict[str, Path], registry: dict[str, Source] | None) -> dict[str, Any]:
    """meta.json's ``sources``: the records ``fetch_sources`` left in ``sources.json`` beside
    the files when they still match (size and sha256), else digests taken now and checked
    against the registry's."""
    records: dict[str, Any] = {}
    for role, path in paths.items():
        path = Path(path)
        listed = path.parent / SOURCES_FILE
        entry = read_json(listed).get(path.name) if listed.is_file() else None
        if entry is None or not _unchanged(path, entry):
            source = (registry or {}).get(role)
            expected = source.digests if source and source.member is None else ()
            try:
                entry = verify(path, expected, path.name)
            except DataError:
                entry = {**verify(path, (), path.name), "expected": list(expected)}
            entry.update(url=source.url if source else None, origin=str(path))
        records[path.name] = entry
    return records
