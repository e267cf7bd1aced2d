"""Real archives, second round: nothing that looks like part of an archive is dropped without a word.

Every archive here is built from the real newer bin in `../shared/data/ifcb/bins` (copied, renamed, linked).
The reference reader, pyifcb, lists it as one bin of 19 ROIs and 4.88507 mL (`ifcb/data/files.py` `DataDirectory`;
the volume: `ifcb/data/adc.py`, from `runTime - inhibitTime` at the flow rate of 0.25 mL/min).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.app import app

runner = CliRunner()
NEW = "D20130526T095207_IFCB013"
#: pyifcb's values for the real newer bin.
PYIFCB_ROIS, PYIFCB_ML = 19, 4.88507


def _bin(ifcb_data: Path, folder: Path, name: str = NEW) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for ext in ("hdr", "adc", "roi"):
        shutil.copy(ifcb_data / "bins" / f"{NEW}.{ext}", folder / f"{name}.{ext}")
    return folder / name


def _ls(archive: Path | str, *extra: str) -> tuple[dict[str, dict], list[str]]:
    """`ls --json`: the rows by bin, and the summary lines (stderr)."""
    result = runner.invoke(app, ["ls", str(archive), "--json", *extra])
    assert result.exit_code == 0, result.output
    rows = {record["bin"]: record for record in map(json.loads, result.stdout.splitlines())}
    return rows, result.stderr.splitlines()


def _the_real_bin(rows: dict[str, dict]) -> None:
    assert list(rows) == [NEW] and rows[NEW]["status"] == "ok"
    assert rows[NEW]["rois"] == PYIFCB_ROIS and rows[NEW]["ml_analyzed"] == pytest.approx(PYIFCB_ML, abs=5e-6)


# --- 1. recycle bins, trash, hidden folders; copies ------------------------------------------------------------------
def test_stray_copies_in_recycle_bins_and_trash_leave_the_real_bin_whole(ifcb_data: Path, tmp_path: Path) -> None:
    """A Synology share's `#recycle`, a desktop's `.Trash-1000`, Windows' `$RECYCLE.BIN` beside the day folders."""
    root = tmp_path / "archive"
    _bin(ifcb_data, root / "D2013" / "D20130526")
    stray = _bin(ifcb_data, root / "#recycle" / "D2013" / "D20130526")
    stray.with_suffix(".roi").write_bytes(b"\x00" * 10)  # a deleted copy that differs: still no conflict
    _bin(ifcb_data, root / ".Trash-1000" / "files")
    _bin(ifcb_data, root / "$RECYCLE.BIN" / "S-1-5-21")
    rows, summary = _ls(root)
    _the_real_bin(rows)
    left_out = next(line for line in summary if "recycle bins" in line)
    assert left_out.startswith("left out (in recycle bins, trash or hidden folders): 3 folders: ")
    assert {"#recycle/", ".Trash-1000/", "$RECYCLE.BIN/"} == set(left_out.split(": ")[-1].split(", "))
    rows, _ = _ls(root, "--exclude-folders", "")  # the user's list never brings them back
    _the_real_bin(rows)

    flat = tmp_path / "flat"  # not laid out by day: listed whole, the files inside them counted one by one
    _bin(ifcb_data, flat)
    _bin(ifcb_data, flat / "@Recycle")
    _bin(ifcb_data, flat / "sub" / ".snapshot")
    rows, summary = _ls(flat)
    _the_real_bin(rows)
    assert "left out (in recycle bins, trash or hidden folders): 6 files: " in "\n".join(summary)


def test_byte_identical_copies_are_one_bin_and_copies_that_differ_a_conflict(ifcb_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    _bin(ifcb_data, root / "D2013" / "D20130526")
    copy = _bin(ifcb_data, root / "backup" / "D20130526")  # a copy the archive's owner keeps beside it
    rows, summary = _ls(root)
    _the_real_bin(rows)
    assert (
        f"left out (byte-identical copies of bins listed from another folder): 3 files: backup/D20130526/{NEW}.adc "
        f"(same as D2013/D20130526/{NEW}.adc)" in "\n".join(summary)
    )
    copy.with_suffix(".adc").write_text(copy.with_suffix(".adc").read_text().replace("\n", "\r\n"))  # other bytes
    rows, _ = _ls(root)
    assert rows[NEW]["status"] == "failed"
    assert rows[NEW]["reason"] == (
        f"files: copies that differ: {root}/D2013/D20130526/{NEW}.adc and {copy}.adc (remove or rename one)"
    )


# --- 2. the field's excluded folders ---------------------------------------------------------------------------------
def test_the_folders_ifcb_inference_leaves_out_are_left_out_by_default(ifcb_data: Path, tmp_path: Path) -> None:
    """WHOI's `ifcb-inference` walks archives without `bad`, `skip`, `beads`, `temp`, `data_temp`
    (`src/ifcb_infer/cli.py`, `_DIR_BLACKLIST`)."""
    root = tmp_path / "archive"
    _bin(ifcb_data, root / "D2013" / "D20130526")
    for number, folder in enumerate(("bad", "skip", "beads", "temp", "data_temp")):
        _bin(ifcb_data, root / "D2013" / "D20130526" / folder, f"D20130526T10000{number}_IFCB013")
    rows, summary = _ls(root)
    _the_real_bin(rows)
    assert (
        "left out (in excluded folders: bad, beads, data_temp, skip, temp; --exclude-folders changes the list): "
        "15 files: " in "\n".join(summary)
    )
    assert summary[-1].endswith("(folders left out: bad, beads, data_temp, skip, temp; recycle bins, trash and "
                                "hidden folders)")  # fmt: skip
    rows, summary = _ls(root, "--exclude-folders", "bad,skip")
    assert sorted(rows) == [NEW, *(f"D20130526T10000{n}_IFCB013" for n in (2, 3, 4))]
    assert "(folders left out: bad, skip; " in summary[-1]


# --- 3. a bin filed under another day's folder -----------------------------------------------------------------------
MISFILED = "D20130527T015207_IFCB013"  # sampled 01:52 UTC on the 27th, filed under the local date, the 26th


@pytest.fixture
def misfiled(ifcb_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    _bin(ifcb_data, root / "D2013" / "D20130526", MISFILED)
    _bin(ifcb_data, root / "D2013" / "D20130528", "D20130528T120000_IFCB013")
    _bin(ifcb_data, root / "D2013" / "D20130524", "D20130527T120000_IFCB013")  # three days off
    return root


def test_a_window_finds_a_bin_filed_under_the_day_before(misfiled: Path) -> None:
    rows, summary = _ls(misfiled, "--start", "2013-05-27", "--end", "2013-05-28")
    assert list(rows) == [MISFILED] and rows[MISFILED]["rois"] == PYIFCB_ROIS
    assert f"listed (bins filed under another day's folder): 1 bin: D2013/D20130526/{MISFILED}" in summary
    rows, summary = _ls(misfiled)  # a full listing finds the one three days off too, and names both
    assert list(rows) == [MISFILED, "D20130527T120000_IFCB013", "D20130528T120000_IFCB013"]
    assert (
        f"listed (bins filed under another day's folder): 2 bins: D2013/D20130524/D20130527T120000_IFCB013, "
        f"D2013/D20130526/{MISFILED}" in summary
    )


def test_classify_bins_finds_a_bin_filed_under_the_day_before(misfiled: Path, tmp_path: Path) -> None:
    from classify_support import make_bundle

    bundle = str(tmp_path / "m.zip")
    make_bundle(bundle)
    args = ["classify", str(misfiled), "--model", bundle, "--out", str(tmp_path / "out.zarr"), "--json"]
    result = runner.invoke(app, [*args, "--bins", MISFILED])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["bins_done"], summary["rois"]) == (1, PYIFCB_ROIS)
    assert summary["left_out"]["bins filed under another day's folder"]["examples"] == [f"D2013/D20130526/{MISFILED}"]
    result = runner.invoke(app, [*args, "--bins", "D20130601T000000_IFCB013"])
    assert result.exit_code == 2 and "the day folders of their days and of the days either side" in result.output
    listed = tmp_path / "bins.txt"
    listed.write_text(f"# the night of the 26th\n{MISFILED}\n")
    result = runner.invoke(app, [*args, "--bins", str(listed)])
    assert result.exit_code == 0 and json.loads(result.stdout)["bins_already_complete"] == 1
    result = runner.invoke(app, [*args, "--bins", str(tmp_path / "no-such-list.txt")])
    assert result.exit_code == 2 and "is neither bin ids nor a file listing them" in result.output


# --- 7. an archive given as a .zip file ------------------------------------------------------------------------------
def _zipped(ifcb_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "unzipped"
    _bin(ifcb_data, folder / "D2013" / "D20130526")
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix())
    return archive


def test_an_archive_given_as_a_zip_path_is_opened(ifcb_data: Path, tmp_path: Path) -> None:
    archive = _zipped(ifcb_data, tmp_path)
    rows, _ = _ls(archive)
    _the_real_bin(rows)
    result = runner.invoke(app, ["ls", str(tmp_path / "unzipped" / "D2013" / "D20130526" / f"{NEW}.hdr")])
    assert result.exit_code == 2
    assert "is a file, not an archive: give the folder that holds the bins (or a .zip of it)" in result.output


def test_classify_a_zip_path(ifcb_data: Path, tmp_path: Path) -> None:
    from classify_support import make_bundle

    archive = _zipped(ifcb_data, tmp_path)
    bundle = str(tmp_path / "m.zip")
    make_bundle(bundle)
    result = runner.invoke(app, ["classify", str(archive), "--model", bundle, "--out", str(tmp_path / "o.zarr"),
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["bins_done"], json.loads(result.stdout)["rois"]) == (1, PYIFCB_ROIS)
    # a file that is no zip at all is refused before anything is written
    result = runner.invoke(app, ["classify", str(tmp_path / "unzipped" / "D2013" / "D20130526" / f"{NEW}.roi"),
                                 "--model", bundle, "--out", str(tmp_path / "q.zarr")])  # fmt: skip
    assert result.exit_code == 2 and "is a file, not an archive" in result.output
    assert not (tmp_path / "q.zarr").exists()


# --- the kind: links, letter case, names -----------------------------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="symbolic links as POSIX file systems make them")
def test_links_are_followed_once_and_broken_ones_named(ifcb_data: Path, tmp_path: Path) -> None:
    """pyifcb follows folder links (`ifcb/data/files.py` `list_data_dirs`, `os.path.isdir`): so does the listing,
    once; a link back into the archive would list it again forever, and is left out with a word."""
    root, elsewhere = tmp_path / "archive", tmp_path / "elsewhere"
    _bin(ifcb_data, elsewhere / "D20130526")
    _bin(ifcb_data, elsewhere / "D2014" / "D20140101", "D20140101T000000_IFCB013")
    (root / "D2013").mkdir(parents=True)
    (root / "D2013" / "D20130526").symlink_to(elsewhere / "D20130526")  # a linked day folder
    (root / "D2014").symlink_to(elsewhere / "D2014")  # a linked year folder
    rows, _ = _ls(root)
    assert sorted(rows) == [NEW, "D20140101T000000_IFCB013"] and {r["status"] for r in rows.values()} == {"ok"}

    flat = tmp_path / "flat"
    stem = _bin(ifcb_data, flat / "a", "D20130527T000000_IFCB013")
    (flat / "b").mkdir()
    for ext in ("hdr", "adc"):
        (flat / "b" / f"{NEW}.{ext}").symlink_to(ifcb_data / "bins" / f"{NEW}.{ext}")  # linked files
    (flat / "b" / f"{NEW}.roi").symlink_to(tmp_path / "gone.roi")  # leads nowhere
    (flat / "a" / "loop").symlink_to(flat)  # back to the root
    (flat / "c").symlink_to(elsewhere)  # a folder outside, listed in place
    rows, summary = _ls(flat)
    assert rows[stem.name]["status"] == "ok"
    assert rows[NEW]["status"] == "failed" and rows[NEW]["reason"] == f"files: links that lead nowhere: b/{NEW}.roi"
    assert rows["D20140101T000000_IFCB013"]["status"] == "ok"  # through flat/c
    assert (
        "left out (folder links that lead back into the archive (listed once, where they point)): 1 folder: a/loop/"
        in summary
    )


def test_files_named_like_a_bin_in_any_case_are_counted(ifcb_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    _bin(ifcb_data, root)
    shutil.copy(ifcb_data / "bins" / f"{NEW}.hdr", root / f"{NEW.lower()}.hdr")  # the id in lower case
    shutil.copy(ifcb_data / "bins" / f"{NEW}.roi", root / f"{NEW}.roi.bak")  # a bin's name, another kind of file
    (root / f"{NEW}_class.h5").write_bytes(b"\x89HDF")
    (root / "notes.txt").write_text("not part of any bin: not counted")
    rows, summary = _ls(root)
    _the_real_bin(rows)
    text = "\n".join(summary)
    assert f"left out (.hdr/.adc/.roi files whose name is not a bin id): 1 file: {NEW.lower()}.hdr" in text
    assert "left out (files named after a bin that are none of its .hdr, .adc, .roi): 2 files: " in text
    assert "notes.txt" not in text


# --- the same on object storage (a real S3 server on loopback, through s3fs) ----------------------------------------
def test_on_s3_recycle_bins_copies_and_a_zip_path(s3_server, ifcb_data: Path, tmp_path: Path) -> None:
    local = tmp_path / "archive"
    _bin(ifcb_data, local / "D2013" / "D20130526")
    _bin(ifcb_data, local / "#recycle" / "D2013" / "D20130526")
    _bin(ifcb_data, local / "D2013" / "D20130526" / "copy")  # uploaded whole: equal plain ETags, nothing read
    bucket = s3_server.new_bucket()
    s3 = s3_server.filesystem()
    s3.put(str(local) + "/", f"{bucket}/archive/", recursive=True)
    options = ["--storage-options", json.dumps(s3_server.storage_options)]
    rows, summary = _ls(f"s3://{bucket}/archive", *options)
    _the_real_bin(rows)
    text = "\n".join(summary)
    assert "left out (in recycle bins, trash or hidden folders): 1 folder: #recycle/" in text
    assert "left out (byte-identical copies of bins listed from another folder): 3 files: " in text
    from pipeline.ifcb.copies import same_file

    listing = s3.find(f"{bucket}/archive/D2013", detail=True)
    sent: list[str] = []
    s3.s3.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
    day = f"{bucket}/archive/D2013/D20130526"
    assert same_file(s3, f"{day}/{NEW}.roi", f"{day}/copy/{NEW}.roi", listing) and sent == []  # by their ETags
    s3.put(str(_zipped(ifcb_data, tmp_path)), f"{bucket}/archive.zip")
    rows, _ = _ls(f"s3://{bucket}/archive.zip", *options)
    _the_real_bin(rows)
