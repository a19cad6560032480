"""cffi builder for ``vz7native._ploop`` (API mode, out of line).

The module is compiled against the installed ``<ploop/libploop.h>``: Debian's
libploop 1.15 (``libploop-dev``) or Virtuozzo 7's libploop 7.0.x (``ploop-devel``).
Structs are declared partially (``...;``) so the compiler supplies the real
layout, and constants come from the header. What exists in one version only is
reached through small C shims whose bodies are chosen by macros set after
reading the header here.

Run by setuptools (``cffi_modules``) or directly: ``python build_ffi.py``.
"""
import os
import re
import subprocess

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER_NAME = "ploop/libploop.h"
MISSING_HEADER_HELP = (
    "cannot find <ploop/libploop.h>: install the libploop headers first "
    "(Debian/Ubuntu: apt-get install libploop-dev; Virtuozzo 7/CentOS 7: "
    "yum install ploop-devel), or point VZ7NATIVE_PLOOP_INCLUDE at the "
    "directory that holds ploop/libploop.h"
)


def _package_version():
    path = os.path.join(HERE, "src", "vz7native", "__init__.py")
    with open(path) as f:
        match = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if match is None:
        raise RuntimeError("no __version__ in %s" % path)
    return match.group(1)


def _include_dirs():
    dirs = []
    if os.environ.get("VZ7NATIVE_PLOOP_INCLUDE"):
        dirs.append(os.environ["VZ7NATIVE_PLOOP_INCLUDE"])
    dirs.extend(d for d in os.environ.get("CPATH", "").split(":") if d)
    dirs.extend(["/usr/local/include", "/usr/include"])
    return dirs


def find_header():
    """Return (include_dir, header_path) of the libploop header, or fail clearly."""
    for inc in _include_dirs():
        path = os.path.join(inc, HEADER_NAME)
        if os.path.isfile(path):
            return inc, path
    raise SystemExit("vz7native build: " + MISSING_HEADER_HELP)


def _libploop_version(include_dir):
    """The ploop package version pkg-config reports, or "" when unknown."""
    try:
        out = subprocess.run(
            ["pkg-config", "--modversion", "ploop"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            universal_newlines=True, check=False,
        )
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def header_features(text):
    """What this header offers beyond the API that 1.15 and 7.0.x share."""
    def struct_body(name):
        m = re.search(r"struct\s+%s\s*\{(.*?)\};" % name, text, re.S)
        return m.group(1) if m else ""

    return {
        "VZ7N_HAVE_READ_DD": bool(re.search(r"\bploop_read_dd\s*\(", text)),
        "VZ7N_HAVE_FSLABEL": "fslabel" in struct_body("ploop_create_param"),
        "VZ7N_HAVE_CBT": "cbt_uuid" in struct_body("ploop_snapshot_param"),
        "VZ7N_HAVE_GET_PART": bool(re.search(r"\bploop_get_part\s*\(", text)),
    }


def sysexit_names(text):
    """SYSEXIT_* names declared by this header (1..43 in 1.15, up to 46 in 7.0.x)."""
    return [n for n in re.findall(r"\b(SYSEXIT_[A-Z0-9_]+)\b", text)
            if not n.startswith("SYSEXIT_RESERVED")]


def _unique(seq):
    seen = set()
    return [x for x in seq if not (x in seen or seen.add(x))]


CDEF_TEMPLATE = r"""
typedef int... off_t;
typedef int... pid_t;
typedef uint32_t __u32;

#define PLOOP_LOG_NOCONSOLE ...
#define PLOOP_LOG_NOSTDOUT ...
#define PLOOP_SNAP_SKIP_TOPDELTA_DESTROY ...
#define PLOOP_SNAP_SKIP_TOPDELTA_CREATE ...

enum ploop_image_mode {
    PLOOP_EXPANDED_MODE, PLOOP_EXPANDED_PREALLOCATED_MODE, PLOOP_RAW_MODE, ...
};

enum { %(sysexit)s, ... };

struct ploop_image_data { char *guid; char *file; ...; };
struct ploop_snapshot_data { char *guid; char *parent_guid; int temporary; ...; };
struct ploop_disk_images_data {
    unsigned long long size;
    int mode;
    int nimages;
    struct ploop_image_data **images;
    char *top_guid;
    int nsnapshots;
    struct ploop_snapshot_data **snapshots;
    unsigned int blocksize;
    ...;
};
struct ploop_mount_param {
    char device[64];
    int ro;
    int flags;
    char *fstype;
    char *target;
    char *guid;
    char *mount_data;
    int fsck_rc;
    ...;
};
struct ploop_create_param {
    unsigned long long size;
    int mode;
    char *image;
    char *fstype;
    int without_partition;
    unsigned int blocksize;
    int fmt_version;
    unsigned int flags;
    ...;
};
struct ploop_snapshot_param { char *guid; char *snap_dir; ...; };
struct ploop_tsnapshot_param {
    char *guid; char *component_name; char *target; char device[64]; char *snap_dir; ...;
};
struct ploop_snapshot_switch_param { const char *guid; const char *guid_old; int flags; ...; };
struct ploop_merge_param { int merge_all; const char *guid; const char *new_delta; ...; };
struct ploop_resize_param { unsigned long long size; int offline_resize; ...; };
struct ploop_info {
    unsigned long long fs_bsize; unsigned long long fs_blocks; unsigned long long fs_bfree;
    unsigned long long fs_inodes; unsigned long long fs_ifree; ...;
};
struct ploop_spec { off_t size; __u32 blocksize; int fmt_version; ...; };

int ploop_open_dd(struct ploop_disk_images_data **di, const char *fname);
void ploop_close_dd(struct ploop_disk_images_data *di);
int ploop_set_component_name(struct ploop_disk_images_data *di, const char *component_name);
int ploop_create_image(struct ploop_create_param *param);
int ploop_get_top_delta_fname(struct ploop_disk_images_data *di, char *out, int len);
int ploop_get_base_delta_fname(struct ploop_disk_images_data *di, char *out, int len);
int ploop_get_spec(struct ploop_disk_images_data *di, struct ploop_spec *spec);
int ploop_uuid_generate(char *uuid, int len);

int ploop_create_snapshot(struct ploop_disk_images_data *di, struct ploop_snapshot_param *param);
int ploop_create_temporary_snapshot(struct ploop_disk_images_data *di,
        struct ploop_tsnapshot_param *param, int *holder_fd);
int ploop_delete_snapshot(struct ploop_disk_images_data *di, const char *guid);
int ploop_merge_snapshot(struct ploop_disk_images_data *di, struct ploop_merge_param *param);
int ploop_switch_snapshot_ex(struct ploop_disk_images_data *di,
        struct ploop_snapshot_switch_param *param);

int ploop_mount_image(struct ploop_disk_images_data *di, struct ploop_mount_param *param);
int ploop_mount_snapshot(struct ploop_disk_images_data *di, struct ploop_mount_param *param);
int ploop_umount(const char *device, struct ploop_disk_images_data *di);
int ploop_umount_image(struct ploop_disk_images_data *di);
int ploop_is_mounted(struct ploop_disk_images_data *di);
int ploop_get_dev(struct ploop_disk_images_data *di, char *out, int len);
int ploop_find_dev(const char *component_name, const char *delta, char *buf, int size);
int ploop_get_dev_by_mnt(const char *path, char *buf, int size);
int ploop_get_mnt_by_dev(const char *dev, char *buf, int size);
int ploop_get_partition_by_mnt(const char *path, char *buf, int size);
int ploop_resize_image(struct ploop_disk_images_data *di, struct ploop_resize_param *param);
int ploop_get_info_by_descr(const char *descr, struct ploop_info *info);

const char *ploop_get_last_error(void);
int ploop_set_log_file(const char *fname);
void ploop_set_log_level(int level);
void ploop_set_verbose_level(int level);

/* Facts recorded at build time. */
static const char *const VZ7N_PACKAGE_VERSION;
static const char *const VZ7N_LIBPLOOP_VERSION;
static const char *const VZ7N_HEADER_PATH;
static const char *const VZ7N_HEADER_FLAVOR;
static const int VZ7N_HAVE_READ_DD;
static const int VZ7N_HAVE_FSLABEL;
static const int VZ7N_HAVE_CBT;

/* Shims over what differs between 1.15 and 7.0.x, and process-wide helpers. */
int vz7n_read_dd(struct ploop_disk_images_data *di, const char *path);
int vz7n_set_fslabel(struct ploop_create_param *param, char *label);
int vz7n_set_snapshot_cbt(struct ploop_snapshot_param *param, char *cbt_uuid);
int vz7n_get_partition(struct ploop_disk_images_data *di, const char *device,
        const char *mount_point, char *out, int len);
void vz7n_clear_last_error(void);
void vz7n_serial_lock(void);
void vz7n_serial_unlock(void);
"""

SOURCE_TEMPLATE = r"""
#include <string.h>
#include <pthread.h>
#include <ploop/libploop.h>

static const char *const VZ7N_PACKAGE_VERSION = "%(package_version)s";
static const char *const VZ7N_LIBPLOOP_VERSION = "%(libploop_version)s";
static const char *const VZ7N_HEADER_PATH = "%(header_path)s";
static const char *const VZ7N_HEADER_FLAVOR = "%(flavor)s";

/* Re-read DiskDescriptor.xml (at path, di's own file) into di. 1.15 has no
 * ploop_read_dd, but every locked getter re-reads the descriptor. It reports a
 * descriptor it cannot parse as a lock failure, so on that failure the file is
 * parsed on its own (that parser answers -1 and leaves its message) to tell a
 * broken descriptor (SYSEXIT_DISKDESCR) from a lock that was not granted. */
int vz7n_read_dd(struct ploop_disk_images_data *di, const char *path)
{
#if VZ7N_HAVE_READ_DD
    (void)path;
    return ploop_read_dd(di);
#else
    struct ploop_disk_images_data *parsed = NULL;
    char buf[4096];
    int rc = ploop_get_top_delta_fname(di, buf, sizeof(buf));
    if (rc != SYSEXIT_LOCK)
        return rc;
    if (ploop_read_disk_descr(&parsed, path) != 0)
        rc = SYSEXIT_DISKDESCR;
    if (parsed != NULL)
        ploop_free_diskdescriptor(parsed);
    return rc;
#endif
}

/* 0 when set, -1 when this libploop has no filesystem labels. */
int vz7n_set_fslabel(struct ploop_create_param *param, char *label)
{
#if VZ7N_HAVE_FSLABEL
    param->fslabel = label;
    return 0;
#else
    (void)param; (void)label;
    return -1;
#endif
}

/* 0 when set, -1 when this libploop has no changed-block tracking. */
int vz7n_set_snapshot_cbt(struct ploop_snapshot_param *param, char *cbt_uuid)
{
#if VZ7N_HAVE_CBT
    param->cbt_uuid = cbt_uuid;
    return 0;
#else
    (void)param; (void)cbt_uuid;
    return -1;
#endif
}

/* Partition device of a mounted image: 7.x asks the library by device,
 * 1.15 only knows it from the mount point. */
int vz7n_get_partition(struct ploop_disk_images_data *di, const char *device,
        const char *mount_point, char *out, int len)
{
#if VZ7N_HAVE_GET_PART
    (void)mount_point;
    return ploop_get_part(di, device, out, len);
#else
    (void)di; (void)device;
    return ploop_get_partition_by_mnt(mount_point, out, len);
#endif
}

/* libploop keeps its last error text per thread and never clears it on
 * success; emptying it before a call tells a fresh message from a stale one. */
void vz7n_clear_last_error(void)
{
    char *buf = (char *)ploop_get_last_error();
    if (buf != NULL)
        buf[0] = '\0';
}

/* One lock for the whole process, shared by every Python sub-interpreter,
 * for the libploop operations that touch process-wide state. */
static pthread_mutex_t vz7n_serial_mutex = PTHREAD_MUTEX_INITIALIZER;

void vz7n_serial_lock(void)
{
    pthread_mutex_lock(&vz7n_serial_mutex);
}

void vz7n_serial_unlock(void)
{
    pthread_mutex_unlock(&vz7n_serial_mutex);
}
"""


def _c_string(value):
    return value.replace("\\", "\\\\").replace('"', '\\"')


def make_ffibuilder():
    include_dir, header_path = find_header()
    with open(header_path) as f:
        text = f.read()
    features = header_features(text)
    names = _unique(sysexit_names(text))
    if not names:
        raise SystemExit("vz7native build: no SYSEXIT_* codes in %s" % header_path)
    flavor = "vz7" if features["VZ7N_HAVE_READ_DD"] else "openvz"

    ffibuilder = FFI()
    ffibuilder.cdef(CDEF_TEMPLATE % {"sysexit": ", ".join(names)})
    ffibuilder.set_source(
        "vz7native._ploop",
        SOURCE_TEMPLATE % {
            "package_version": _c_string(_package_version()),
            "libploop_version": _c_string(_libploop_version(include_dir)),
            "header_path": _c_string(header_path),
            "flavor": flavor,
        },
        include_dirs=[] if include_dir == "/usr/include" else [include_dir],
        libraries=["ploop", "pthread"],
        # One build per Python: the 3.6 and 3.11 builds must not share a file name.
        py_limited_api=False,
        define_macros=[(k, "1" if v else "0") for k, v in sorted(features.items())],
    )
    return ffibuilder


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.join(HERE, "src"), verbose=True)
