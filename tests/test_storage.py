"""Sweep storage through pyarrow's filesystem layer, against a real S3-compatible server on 127.0.0.1
(tests/conftest.py's `s3_storage`), and the storage paths a sweep file may name."""

import pytest

from fixray.cli import main
from fixray.storage import Storage
from fixray.sweep.spec.checks import SweepFileError, parse_sweep

RAW = {"dataset": "digits", "model": "small_cnn", "epochs": 1, "search": {"space": {"fixed": [True]}}}


def test_a_bucket_holds_what_fixray_writes_and_hands_folders_back_locally(s3_storage, tmp_path, monkeypatch):
    bucket = Storage(s3_storage)
    assert bucket.root == "fixray/runs" and bucket.shown("s", "x.json") == "s3://fixray/runs/s/x.json"
    bucket.check()
    bucket.write_text('{"a": 1}\n', "s", "trial", "figures", "f.png")
    assert bucket.read_text("s", "trial", "figures", "f.png") == '{"a": 1}\n'
    assert bucket.is_dir("s", "trial") and not bucket.exists("s", "nothing")
    assert [info.base_name for info in bucket.listing("s")] == ["trial"] and bucket.listing("none") == []
    assert bucket.relative(bucket.path("s", "trial")) == ["s", "trial"]
    with bucket.local_copy(bucket.path("s", "trial", "figures")) as folder:
        assert (folder / "f.png").read_text() == '{"a": 1}\n'  # downloaded, not a path into the bucket
    bucket.delete_dir(bucket.path("s"))
    assert not bucket.exists("s")
    assert bucket.driver_dir("s") == tmp_path / "driver" / "s3" / "fixray" / "runs" / "s"  # locks stay on a disk

    local = Storage("runs")
    assert (
        local.location == local.root == str(tmp_path.cwd() / "runs")
        and local.driver_dir("s") == tmp_path.cwd() / "runs" / "s"
    )


def test_a_sweep_on_a_missing_bucket_exits_2_before_anything_starts(s3_storage, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = s3_storage.replace("s3://fixray/", "s3://no-such-bucket/")
    (tmp_path / "s.yaml").write_text(
        f"name: s\ndataset: digits\nmodel: small_cnn\nepochs: 1\nstorage_path: '{missing}'\n"
        "search: {space: {fixed: [true]}}\n"
    )
    assert main(["sweep", "s.yaml"]) == 2
    message = capsys.readouterr().err
    assert "storage_path s3://no-such-bucket/runs: not readable" in message and "does not exist" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # no store, no folders, no lock


@pytest.mark.parametrize(
    "location, shown",
    [
        ("s3://bkt/runs?access_key=AKIA", "bucket URI options among"),
        ("s3://bkt/runs#part", "without a '#' fragment"),
        ("s3://Bkt_1/runs", "bucket name of lowercase letters, digits"),
        ("http://host/runs", "a folder, or a bucket URI of s3://, gs://, gcs://"),
    ],
)
def test_a_storage_uri_fixray_would_not_know_how_to_reach_safely_is_refused(location, shown, tmp_path):
    with pytest.raises(SweepFileError) as refused:
        parse_sweep(RAW | {"storage_path": location}, tmp_path / "s.yaml")
    assert shown in str(refused.value) and "storage_path" in str(refused.value)


def test_a_bucket_uri_with_a_private_endpoint_is_a_storage_path(tmp_path):
    uri = "s3://fixray-runs.eu/team/runs?endpoint_override=minio.local:9000&scheme=http"
    assert parse_sweep(RAW | {"storage_path": uri}, tmp_path / "s.yaml").storage_path == uri
