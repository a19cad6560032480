"""``python -m fdsim``: backup and restore from the command line."""
import json
import os
import subprocess
import sys

from fdsim import constants as C
from fdsim.testing import PLUGIN_DIR, virtual_plugin, write_plugin

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def fdsim(*args):
    env = dict(os.environ, PYTHONPATH=TESTS_DIR)
    return subprocess.run([sys.executable, "-m", "fdsim"] + list(args), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)


def test_backup_restore_and_listings(tmp_path):
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "file.txt").write_text("data")
    workdir = str(tmp_path / "fdsim")
    line = "python3:module_path=%s:module_name=reference_tree:root=%s" % (PLUGIN_DIR, tree)

    backup = fdsim("backup", "--workdir", workdir, "--plugin", line, "--bareos-version", "22",
                   "--fileset-option", "sparse=yes", "--debug-level", "150")
    assert backup.returncode == 0, backup.stdout
    assert "Backup job 1 (backup-fdsim." in backup.stdout and ": T (OK)" in backup.stdout
    assert "Bareos 22.0.0" in backup.stdout and "Files: 2" in backup.stdout
    assert "python3-fd: Successfully loaded module with name reference_tree" in backup.stdout

    restored = tmp_path / "restored"
    restore = fdsim("restore", "--workdir", workdir, "--where", str(restored),
                    "--select", str(tree / "file.txt"))
    assert restore.returncode == 0, restore.stdout
    assert (restored / str(tree)[1:] / "file.txt").read_text() == "data"
    marked = tmp_path / "marked"
    restore = fdsim("restore", "--workdir", workdir, "--where", str(marked), "--mark", str(tree))
    assert restore.returncode == 0 and "Files: 2" in restore.stdout, restore.stdout
    assert (marked / str(tree)[1:] / "file.txt").read_text() == "data"

    jobs = fdsim("jobs", "--workdir", workdir)
    assert [line.split()[:4] for line in jobs.stdout.splitlines()] == [
        ["1", "B", "F", "T"], ["2", "R", "T", "files=1"], ["3", "R", "T", "files=2"]]
    files = fdsim("files", "--workdir", workdir, "--jobid", "1")
    assert "FT_REG" in files.stdout and str(tree / "file.txt") in files.stdout


def test_failed_job_exit_status_and_bad_options(tmp_path):
    workdir = str(tmp_path / "fdsim")
    failed = fdsim("backup", "--workdir", workdir, "--plugin",
                   "python3:module_path=%s:module_name=nosuchmodule" % PLUGIN_DIR)
    assert failed.returncode == 1
    assert "f (Fatal error)" in failed.stdout and "No module named" in failed.stdout
    bad = fdsim("backup", "--workdir", workdir, "--plugin", "python3:x=1",
                "--fileset-option", "sparse")
    assert bad.returncode != 0 and "--fileset-option 'sparse': expected KEY=VALUE" in bad.stdout


def test_a_lean_backup_keeps_its_records_in_files(tmp_path):
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "file.txt").write_text("data")
    workdir = tmp_path / "fdsim"
    line = "python3:module_path=%s:module_name=reference_tree:root=%s" % (PLUGIN_DIR, tree)
    backup = fdsim("backup", "--workdir", str(workdir), "--plugin", line, "--lean",
                   "--debug-level", "150")
    assert backup.returncode == 0, backup.stdout
    assert ": T (OK)" in backup.stdout and "Files: 2" in backup.stdout
    assert "python3-fd: Successfully loaded module with name reference_tree" in backup.stdout
    trace = (workdir / "jobs" / "1" / "trace.jsonl").read_text().splitlines()
    assert '["start_backup_file", 0]' in trace


def test_json_reports_and_the_fd_plugin_directory(tmp_path):
    """--json prints the job and the catalog rows as data; --plugin-directory is
    on the job's path, as python3-fd puts the FD's Plugin Directory there."""
    workdir = str(tmp_path / "fdsim")
    line = write_plugin(tmp_path / "mine", "mine", virtual_plugin("pass"), files="/a,/b")
    without = fdsim("backup", "--workdir", workdir, "--plugin", line, "--json")
    assert without.returncode == 1
    job = json.loads(without.stdout)
    assert job["status"] == "f"
    assert any(kind == "M_FATAL" and "No module named 'virtual'" in text
               for kind, text in job["log"]), job

    backup = fdsim("backup", "--workdir", workdir, "--plugin", line, "--json",
                   "--plugin-directory", PLUGIN_DIR)
    assert backup.returncode == 0, backup.stdout
    job = json.loads(backup.stdout)
    assert (job["jobid"], job["kind"], job["status"], job["files"], job["bytes"]) == \
        (2, "backup", "T", 2, 12)
    files = json.loads(fdsim("files", "--workdir", workdir, "--jobid", "2", "--json").stdout)
    assert [(row["path"], row["type"], row["size"]) for row in files] == \
        [("/a", C.FT["FT_REG"], 6), ("/b", C.FT["FT_REG"], 6)]
