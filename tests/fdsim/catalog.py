"""The Director's catalog (sqlite): jobs, FileSets, files and restore objects.

It answers what the Director asks before a job -- the since time of an
Incremental/Differential, the accurate list, the files a restore selects -- the
way contract §13 describes: the accurate list and the restore tree come from the
latest Full (+ Differential/Incrementals) of the same Client and FileSet, the
since time from the same Job name; deleted records have FileIndex 0, are listed
but hidden from restores and from later accurate lists.
"""
import fnmatch
import itertools
import json
import sqlite3

from . import constants as C
from .native import STAT_FIELDS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fileset (
    filesetid INTEGER PRIMARY KEY, name TEXT NOT NULL, definition TEXT NOT NULL,
    UNIQUE (name, definition));
CREATE TABLE IF NOT EXISTS job (
    jobid INTEGER PRIMARY KEY, name TEXT NOT NULL, job TEXT, type TEXT NOT NULL,
    level TEXT NOT NULL, client TEXT NOT NULL, filesetid INTEGER, status TEXT NOT NULL,
    starttime INTEGER NOT NULL, endtime INTEGER, since INTEGER, files INTEGER,
    bytes INTEGER, errors INTEGER, volume TEXT, bareos_version TEXT);
CREATE TABLE IF NOT EXISTS file (
    jobid INTEGER NOT NULL, fileindex INTEGER NOT NULL, path TEXT NOT NULL,
    type INTEGER NOT NULL, deleted INTEGER NOT NULL, fname TEXT, link TEXT,
    linkfi INTEGER, cmd TEXT, vol_offset INTEGER, {stat});
CREATE INDEX IF NOT EXISTS file_job ON file (jobid, path);
CREATE TABLE IF NOT EXISTS restoreobject (
    jobid INTEGER NOT NULL, object_index INTEGER, object_name TEXT, object BLOB,
    object_len INTEGER, object_type INTEGER, plugin_name TEXT);
""".format(stat=", ".join("%s INTEGER" % f for f in STAT_FIELDS))

OK_STATUSES = ("T", "W")


def _rows(cursor):
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


class Catalog(object):
    """A catalog file; every call opens its own connection (thread-safe)."""

    def __init__(self, path):
        self.path = path
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self):
        db = sqlite3.connect(self.path, timeout=60)
        # A test catalog: durability across power loss is not worth an fsync per job.
        db.execute("PRAGMA synchronous=OFF")
        return db

    def _query(self, sql, args=()):
        db = self._connect()
        try:
            return _rows(db.execute(sql, args))
        finally:
            db.close()

    # --- jobs ----------------------------------------------------------------------

    def fileset_id(self, name, definition):
        text = json.dumps(definition, sort_keys=True)
        db = self._connect()
        try:
            with db:
                db.execute("INSERT OR IGNORE INTO fileset (name, definition) VALUES (?, ?)",
                           (name, text))
                return db.execute("SELECT filesetid FROM fileset WHERE name=? AND "
                                  "definition=?", (name, text)).fetchone()[0]
        finally:
            db.close()

    def new_job(self, **fields):
        db = self._connect()
        try:
            with db:
                names = sorted(fields)
                cursor = db.execute("INSERT INTO job (%s) VALUES (%s)" % (
                    ", ".join(names), ", ".join("?" for _ in names)),
                    [fields[n] for n in names])
                return cursor.lastrowid
        finally:
            db.close()

    def update_job(self, jobid, **fields):
        db = self._connect()
        try:
            with db:
                db.execute("UPDATE job SET %s WHERE jobid=?" % ", ".join(
                    "%s=?" % n for n in sorted(fields)),
                    [fields[n] for n in sorted(fields)] + [jobid])
        finally:
            db.close()

    def job(self, jobid):
        rows = self._query("SELECT * FROM job WHERE jobid=?", (jobid,))
        return rows[0] if rows else None

    def jobs(self):
        return self._query("SELECT * FROM job ORDER BY jobid")

    def last_backup(self, levels, client, filesetid, name=None, after=None):
        """The latest successful backup of ``levels`` for client+FileSet (and Job
        name, when given) that started after ``after``."""
        sql = ("SELECT * FROM job WHERE type='B' AND status IN ('T','W') AND client=? AND "
               "filesetid=? AND level IN (%s)" % ",".join("?" for _ in levels))
        args = [client, filesetid] + list(levels)
        if name is not None:
            sql += " AND name=?"
            args.append(name)
        if after is not None:
            sql += " AND jobid>?"
            args.append(after)
        rows = self._query(sql + " ORDER BY jobid DESC LIMIT 1", args)
        return rows[0] if rows else None

    def backup_chain(self, client, filesetid, level="I"):
        """JobIds the Director bases an accurate list or a "most recent" restore on:
        the latest Full, for level I also the latest Differential after it and the
        Incrementals after that (for D the Full alone)."""
        full = self.last_backup(("F",), client, filesetid)
        if full is None:
            return []
        chain = [full["jobid"]]
        if level == "D":
            return chain
        diff = self.last_backup(("D",), client, filesetid, after=full["jobid"])
        base = full["jobid"]
        if diff is not None:
            chain.append(diff["jobid"])
            base = diff["jobid"]
        chain += [r["jobid"] for r in self._query(
            "SELECT jobid FROM job WHERE type='B' AND status IN ('T','W') AND client=? AND "
            "filesetid=? AND level='I' AND jobid>? ORDER BY jobid", (client, filesetid, base))]
        return chain

    # --- files -----------------------------------------------------------------------

    def add_files(self, rows):
        """Insert file rows (dicts with the same keys): any iterable, consumed one
        row at a time in one transaction."""
        rows = iter(rows)
        first = next(rows, None)
        if first is None:
            return
        names = sorted(first)
        db = self._connect()
        try:
            with db:
                db.executemany("INSERT INTO file (%s) VALUES (%s)" % (
                    ", ".join(names), ", ".join("?" for _ in names)),
                    ([row[n] for n in names] for row in itertools.chain([first], rows)))
        finally:
            db.close()

    def add_restore_objects(self, rows):
        db = self._connect()
        try:
            with db:
                db.executemany("INSERT INTO restoreobject (jobid, object_index, object_name, "
                               "object, object_len, object_type, plugin_name) VALUES "
                               "(?, ?, ?, ?, ?, ?, ?)", rows)
        finally:
            db.close()

    def files(self, jobid):
        """Every file record of a job, deleted markers included (like ``list files``)."""
        return self._query("SELECT * FROM file WHERE jobid=? ORDER BY fileindex, path",
                           (jobid,))

    def restore_objects(self, jobids):
        return self._query("SELECT * FROM restoreobject WHERE jobid IN (%s) ORDER BY jobid, "
                           "object_index" % ",".join("?" for _ in jobids), list(jobids))

    def latest_versions(self, jobids):
        """path -> latest record over ``jobids``; paths whose latest record is a
        deleted marker are dropped (restore tree, accurate list)."""
        if not jobids:
            return {}
        latest = {}
        for row in self._query("SELECT * FROM file WHERE jobid IN (%s) ORDER BY jobid, "
                               "fileindex" % ",".join("?" for _ in jobids), list(jobids)):
            latest[row["path"]] = row
        return {path: row for path, row in latest.items() if not row["deleted"]}

    def restore_tree(self, jobids):
        """The rows a restore can select: the latest versions, without the rows
        that have no name (a directory saved with an empty link) -- the tree
        has no node for them."""
        return [row for row in self.latest_versions(jobids).values() if row["path"]]

    def accurate_list(self, client, filesetid, level):
        return [dict(row) for row in sorted(
            self.latest_versions(self.backup_chain(client, filesetid, level)).values(),
            key=lambda r: r["path"])]


def select(rows, names=None, marks=None):
    """Rows a restore selects; ``names`` and ``marks`` both None select all.

    ``names``: catalog paths or globs; each selects the entries it matches and
    nothing more -- a directory's catalog name (``/d/``) is that entry only, as
    bconsole's ``file=`` (§6 "Paths").  ``marks``: paths or globs marked in the
    restore tree (a directory with or without its slash); a marked directory
    brings everything below it, as ``mark`` does.
    """
    if names is None and marks is None:
        return list(rows)
    chosen = set()
    subtrees = []
    for row in rows:
        path = row["path"]
        if any(fnmatch.fnmatchcase(path, name) for name in names or ()):
            chosen.add(path)
        if any(fnmatch.fnmatchcase(path.rstrip("/"), mark.rstrip("/")) for mark in marks or ()):
            chosen.add(path)
            if row["type"] == C.FT["FT_DIREND"]:
                subtrees.append(path if path.endswith("/") else path + "/")
    return [row for row in rows
            if row["path"] in chosen or any(row["path"].startswith(d) for d in subtrees)]
