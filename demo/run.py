#!/usr/bin/env python3
"""The end-to-end demo (``make demo``): a scripted tour on a scratch directory.

Everything happens under a fresh temporary directory that is removed at the end
(pass --keep to look at it afterwards).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from vz7native import ploop

VZ7PLOOP = os.path.join(os.path.dirname(sys.executable), "vz7ploop")


def step(title):
    print("\n== %s" % title)


def show(*argv):
    print("$ vz7ploop " + " ".join(argv))
    proc = subprocess.run([VZ7PLOOP] + list(argv), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    print(proc.stdout.rstrip())
    if proc.returncode:
        print("(exit code %d)" % proc.returncode)
    return proc


def tour_of_the_binding(work):
    step("A ploop image, created in-process by libploop (no filesystem: no driver here)")
    image = os.path.join(work, "ct", "root.hdd", "root.hds")
    os.makedirs(os.path.dirname(image))
    show("init", "-s", "256M", "-t", "none", image)
    dd = os.path.join(os.path.dirname(image), "DiskDescriptor.xml")
    show("info", dd)

    step("Snapshots: a given GUID, a generated one, the tree as JSON")
    show("snapshot", "-u", "{8e6b1f0a-5c2d-4e7f-9a1b-3c4d5e6f7a8b}", dd)
    show("snapshot", dd)
    listing = json.loads(show("snapshot-list", "--json", dd).stdout)
    print("%d snapshots, current top: %s" % (
        len(listing), [s["guid"] for s in listing if s["current"]][0]))

    step("The same from Python")
    with ploop.Disk.open(dd) as disk:
        for s in disk.snapshots:
            print("  %s <- %s%s" % (s.parent_guid, s.guid, "  (top)" if s.current else ""))
        print("  chain of the top:", [os.path.basename(f).decode() for f in disk.chain()])

    step("Errors carry libploop's message and the SYSEXIT code")
    show("snapshot-delete", "-u", "{00000000-1111-2222-3333-444444444444}", dd)
    mnt = os.path.join(work, "mnt")
    os.mkdir(mnt)
    show("mount", "-r", "-m", mnt, dd)

    step("Merge everything back into the base")
    show("snapshot-merge", "-A", dd)
    show("snapshot-list", dd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="vz7native-demo-")
    print("scratch directory: %s" % work)
    try:
        tour_of_the_binding(work)
    finally:
        if args.keep:
            print("\nkept: %s" % work)
        else:
            shutil.rmtree(work)
    print("\ndemo finished")


if __name__ == "__main__":
    main()
