"""Decoding workers that die or hang cost one page, never the run, and never change the shards."""
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tfrecords_tool import conversion
from tfrecords_tool import manifest
from tfrecords_tool import page_pool

REPO = Path(__file__).resolve().parents[1]


def _job(job):
    """A test job: 'crash' kills its own process, 'hang' never returns, the rest echo."""
    if job == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if job == "hang":
        time.sleep(600)
    if job.startswith("crash-once:"):  # crashes unless the marker file exists, then creates it
        marker = job.split(":", 1)[1]
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
    return job.upper()


def test_dead_and_stuck_workers_cost_one_page_each(tmp_path):
    jobs = [f"p{i}" for i in range(60)]
    jobs[7], jobs[30], jobs[45] = "crash", "hang", f"crash-once:{tmp_path / 'marker'}"
    start = time.monotonic()
    with page_pool.PagePool(_job, 2, page_timeout=1.5) as pool:
        results = list(pool.imap(jobs))
        assert pool.deaths == 3  # "crash" twice (retried once), "crash-once" once
        assert len(pool.pids()) == 2 and all(pid > 0 for pid in pool.pids())
    assert time.monotonic() - start < 30
    expected = [(job.upper(), None) for job in jobs]
    expected[7] = (None, "decoder crashed (signal 9)")
    expected[30] = (None, "decoding took longer than --page_timeout=1.5 s")
    expected[45] = (jobs[45].upper(), None)  # the retry in a fresh worker succeeded
    assert results == expected


def test_workers_that_keep_dying_stop_the_run():
    with page_pool.PagePool(_job, 2, page_timeout=30) as pool:
        with pytest.raises(page_pool.WorkersKeepDying, match="5 decoding workers died in a row"):
            list(pool.imap(["crash"] * 20))
        assert list(pool.imap(["a", "b"])) == [("A", None), ("B", None)]  # pool usable


def _parent(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid):
    """Not yet a zombie (a zombie has released its files)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _holders(fifo, converter_pid):
    """PIDs of the converter's workers (its children, or its forkserver's) that have `fifo`
    open."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = _parent(entry.name)
            if converter_pid in (parent, _parent(parent)) and any(
                    os.readlink(fd) == str(fifo) for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


def _serve_fifo(fifo, parent_pid, kills, data):
    """Kills the worker that opens `fifo` the first `kills` times; then feeds it `data`."""
    for _ in range(kills):
        with open(fifo, "wb") as writer:  # returns once a worker opened the page for reading
            deadline = time.monotonic() + 30
            while not (pids := _holders(fifo, parent_pid)) and time.monotonic() < deadline:
                time.sleep(0.01)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            # A dying process keeps its files open for a moment: the next open() must meet the
            # fresh worker, not this one.
            while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.01)
            try:
                writer.close()
            except BrokenPipeError:
                pass
    if data is not None:
        with open(fifo, "wb") as writer:
            writer.write(data)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
def test_killed_workers_in_a_real_conversion(sample_dir, tmp_path):
    """SIGKILL the real worker that reads a page: that page is retried in a fresh worker and
    the shards are the same as an undisturbed run; a page whose worker dies twice is skipped."""
    images = tmp_path / "images"
    shutil.copytree(sample_dir / "images", images)
    retried, doomed = images / "memo" / "memo_0001.tif", images / "memo" / "memo_0002.tif"
    retried_bytes = retried.read_bytes()
    args = [f"--labels={sample_dir}/labels.txt", f"--images_dir={images}", "--image_size=32",
            "--num_shards=3", "--workers=2", "--page_timeout=60"]
    for page in (retried, doomed):
        page.unlink()
        os.mkfifo(page)
    process = subprocess.Popen([sys.executable, "-m", "tfrecords_tool.convert", *args,
                                f"--output_dir={tmp_path / 'out'}"], cwd=REPO, text=True,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    feeders = [threading.Thread(target=_serve_fifo, args=(retried, process.pid, 1, retried_bytes),
                                daemon=True),
               threading.Thread(target=_serve_fifo, args=(doomed, process.pid, 2, None),
                                daemon=True)]
    for feeder in feeders:
        feeder.start()
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "Warning" not in stderr  # the replacement workers start quietly
    assert "skipped memo/memo_0002.tif: decoder crashed (signal 9)" in stderr
    written = manifest.read_json(str(tmp_path / "out" / "labels-manifest.json"))
    assert written["skipped"] == [{"path": "memo/memo_0002.tif",
                                    "reason": "decoder crashed (signal 9)"}]

    for page in (retried, doomed):
        page.unlink()
    retried.write_bytes(retried_bytes)  # undisturbed, with memo_0002 missing
    conversion.convert(output_dir=str(tmp_path / "reference"), images_dir=str(images),
                       labels=str(sample_dir / "labels.txt"), image_size=32, num_shards=3,
                       workers=0)
    for shard in sorted((tmp_path / "reference").glob("*.tfrecord")):
        assert (tmp_path / "out" / shard.name).read_bytes() == shard.read_bytes(), shard.name
