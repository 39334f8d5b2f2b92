"""Sources: the mirror, checksums, and the network path against a loopback HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
import zipfile

import pytest

from aoaffm.data import DataError, Source, build_dataset, download, fetch_sources
from aoaffm.data.sources import MIRROR_ENV, fetch_source, resolve_mirror
from aoaffm.io import read_json

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB
PAYLOAD_SHA = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the server's ``payload``; honours Range unless told not to; can cut the
    connection after ``cut_after`` body bytes (once)."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        asked = self.headers.get("Range")
        server.ranges.append(asked)
        start = int(asked.removeprefix("bytes=").split("-")[0]) if asked else 0
        if asked and server.honour_range:
            if start >= len(server.payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/*")
        else:
            start = 0
            self.send_response(200)
        body = server.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:
            self.wfile.write(body[: server.cut_after])
            server.cut_after = None
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload, httpd.ranges, httpd.cut_after, httpd.honour_range = PAYLOAD, [], None, True
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/file.bin"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_download_streams_verifies_and_renames(server, tmp_path):
    record = download(server.url, tmp_path / "file.bin", (PAYLOAD_SHA,), progress=False)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert record["verified"] and record["sha256"] == PAYLOAD_SHA.removeprefix("sha256:")
    assert not (tmp_path / "file.bin.part").exists()


def test_interrupted_download_leaves_only_a_part_file_and_resumes(server, tmp_path):
    target = tmp_path / "file.bin"
    server.cut_after = 100_000
    with pytest.raises(DataError, match="could not download .*file.bin after 1 attempt"):
        download(server.url, target, (PAYLOAD_SHA,), retries=0, progress=False)
    assert not target.exists()  # nothing that looks complete
    kept = (tmp_path / "file.bin.part").stat().st_size
    assert 0 < kept <= 100_000  # whole 64 KiB chunks received before the cut
    download(server.url, target, (PAYLOAD_SHA,), retries=0, progress=False)
    assert server.ranges == [None, f"bytes={kept}-"]
    assert target.read_bytes() == PAYLOAD


def test_retry_resumes_within_one_call(server, tmp_path):
    server.cut_after = 150_000
    download(server.url, tmp_path / "f", (PAYLOAD_SHA,), retries=2, backoff_s=0, progress=False)
    assert len(server.ranges) == 2 and server.ranges[0] is None
    assert server.ranges[1] == f"bytes={2 * 65536}-"  # resumed after the chunks it had
    assert (tmp_path / "f").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_the_download(server, tmp_path):
    server.honour_range = False
    (tmp_path / "f.part").write_bytes(b"stale bytes from another file")
    download(server.url, tmp_path / "f", (PAYLOAD_SHA,), retries=0, progress=False)
    assert (tmp_path / "f").read_bytes() == PAYLOAD


def test_altered_download_is_a_checksum_error_and_is_not_kept(server, tmp_path):
    server.payload = PAYLOAD[:-1] + b"X"
    actual = hashlib.sha256(server.payload).hexdigest()
    with pytest.raises(DataError) as error:
        download(server.url, tmp_path / "f", (PAYLOAD_SHA,), retries=0, progress=False)
    message = str(error.value)
    assert "f: checksum mismatch" in message
    assert PAYLOAD_SHA.removeprefix("sha256:") in message and actual in message
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .part


def test_offline_without_mirror_names_the_url_and_the_mirror_variable(tmp_path):
    with socket_closed_port() as port:
        url = f"http://127.0.0.1:{port}/Mobile_Frappe.zip"
        source = Source("Mobile_Frappe.zip", url, mirror_path="frappe/Mobile_Frappe.zip")
        with pytest.raises(DataError) as error:
            fetch_source(source, tmp_path, None, progress=False, retries=1, backoff_s=0)
    assert url in str(error.value) and MIRROR_ENV in str(error.value)
    assert not (tmp_path / "Mobile_Frappe.zip").exists()


class socket_closed_port:  # noqa: N801 (used as a context manager)
    """A loopback port with nothing listening (bound then released)."""

    def __enter__(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- mirror


def test_mirror_copy_is_verified_and_recorded(mirror_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    paths = fetch_sources("frappe", "raw", tmp_path / "raw", mirror_dir, progress=False)
    record = read_json(tmp_path / "raw" / "sources.json")["Mobile_Frappe.zip"]
    assert record["verified"] and record["origin"].endswith("frappe/Mobile_Frappe.zip")
    assert paths["log"].read_bytes() == (mirror_dir / "frappe" / "Mobile_Frappe.zip").read_bytes()
    mtime = paths["log"].stat().st_mtime_ns
    fetch_sources("frappe", "raw", tmp_path / "raw", mirror_dir, progress=False)
    assert paths["log"].stat().st_mtime_ns == mtime  # unchanged file kept, not copied again


def test_environment_variable_wins_over_the_mirror_argument(mirror_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, str(mirror_dir))
    assert resolve_mirror(tmp_path / "elsewhere") == mirror_dir
    paths = fetch_sources("criteo", "kaggle-sample", tmp_path / "raw", tmp_path / "nowhere", False)
    assert paths["train"].is_file()
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "missing"))
    with pytest.raises(DataError, match=f"\\${MIRROR_ENV} names .*missing, which is not a folder"):
        resolve_mirror(None)


def test_mirror_without_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    (tmp_path / "mirror").mkdir()
    with pytest.raises(DataError) as error:
        fetch_sources("frappe", "nfm", tmp_path / "raw", tmp_path / "mirror", progress=False)
    message = str(error.value)
    assert "has no frappe-nfm/frappe.train.libfm" in message and str(tmp_path / "mirror") in message
    assert "neural_factorization_machine" in message  # the canonical URL
    assert not any((tmp_path / "raw").glob("*.libfm"))


def test_altered_mirror_file_is_a_checksum_error(mirror_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    (tmp_path / "mirror" / "frappe").mkdir(parents=True)
    truncated = (mirror_dir / "frappe" / "Mobile_Frappe.zip").read_bytes()[:-10]
    (tmp_path / "mirror" / "frappe" / "Mobile_Frappe.zip").write_bytes(truncated)
    with pytest.raises(DataError) as error:
        fetch_sources("frappe", "raw", tmp_path / "raw", tmp_path / "mirror", progress=False)
    message = str(error.value)
    assert "frappe/Mobile_Frappe.zip" in message and "checksum mismatch (sha256)" in message
    assert "expected 4adc616de57170f2" in message
    assert f"got {hashlib.sha256(truncated).hexdigest()}" in message
    assert not (tmp_path / "raw" / "Mobile_Frappe.zip").exists()


def test_archive_in_the_mirror_gives_its_member_unverified(tmp_path, monkeypatch):
    """GroupLens publishes no digest for ml-10m.zip: the member's digest is recorded,
    marked unverified, and the build copies that record into meta.json."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    (tmp_path / "mirror" / "movielens").mkdir(parents=True)
    tags = b"1::10::funny::100\n1::20::dark::101\n2::10::funny::102\n2::30::epic::103\n"
    with zipfile.ZipFile(tmp_path / "mirror" / "movielens" / "ml-10m.zip", "w") as z:
        z.writestr("ml-10M100K/tags.dat", tags)
    paths = fetch_sources("movielens", "ml10m-tags", tmp_path / "raw", tmp_path / "mirror", False)
    assert paths["tags"].read_bytes() == tags
    meta = build_dataset("movielens", "ml10m-tags", paths, tmp_path / "out", seed=0, progress=False)
    record = meta["sources"]["ml-10m-tags.dat"]
    assert record["sha256"] == hashlib.sha256(tags).hexdigest()
    assert record["verified"] is False and record["archive_expected"] == []
    assert record["url"] == "https://files.grouplens.org/datasets/movielens/ml-10m.zip"


@pytest.mark.parametrize("call", ["fetch", "build"])
def test_unknown_dataset_or_variant(tmp_path, call):
    for dataset, variant, expected in (
        (
            "frapp",
            "raw",
            "unknown dataset 'frapp'; expected one of ['frappe', 'movielens', 'criteo']",
        ),
        (
            "frappe",
            "csv",
            "unknown variant 'csv' for dataset 'frappe'; expected one of ['raw', 'nfm-rebuilt', 'nfm']",
        ),
    ):
        with pytest.raises(DataError) as error:
            if call == "fetch":
                fetch_sources(dataset, variant, tmp_path / "raw", tmp_path, progress=False)
            else:
                build_dataset(dataset, variant, {}, tmp_path / "out", seed=0, progress=False)
        assert expected in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_input_file_names_it(tmp_path):
    with pytest.raises(DataError, match="Mobile_Frappe.zip: no such file"):
        build_dataset(
            "frappe", "raw", {"log": tmp_path / "Mobile_Frappe.zip"}, tmp_path / "o", seed=0
        )
    assert not (tmp_path / "o").exists()


def test_copy_of_mirror_is_atomic(mirror_dir, tmp_path, monkeypatch):
    """A copy that fails midway leaves no file under the final name."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)

    def broken_copy(src, dst, *args, **kwargs):
        with open(dst, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        fetch_sources("frappe", "raw", tmp_path / "raw", mirror_dir, progress=False)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == []


def test_network_archive_member_is_extracted(server, tmp_path):
    """A source whose URL is an archive: downloaded once, its member extracted, the
    archive's digest checked and recorded."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("ml-10M100K/tags.dat", b"1::10::funny::100\n")
    server.payload = buffer.getvalue()
    digest = "sha256:" + hashlib.sha256(server.payload).hexdigest()
    source = Source("tags.dat", server.url, (digest,), member="ml-10M100K/tags.dat")
    record = fetch_source(source, tmp_path, None, progress=False, retries=0)
    assert (tmp_path / "tags.dat").read_bytes() == b"1::10::funny::100\n"
    assert record["verified"] and record["archive_expected"] == [digest]
    assert record["sha256"] == hashlib.sha256(b"1::10::funny::100\n").hexdigest()
