"""cffi builders (API mode, out of line) for ``vz7native._ploop`` and ``vz7native._walk``.

``make_ffibuilder`` builds ``vz7native._ploop``, the libploop binding. It is
compiled against the installed ``<ploop/libploop.h>``: Debian's
libploop 1.15 (``libploop-dev``) or Virtuozzo 7's libploop 7.0.x (``ploop-devel``).
Structs are declared partially (``...;``) so the compiler supplies the real
layout, and constants come from the header. What exists in one version only is
reached through small C shims whose bodies are chosen by macros set after
reading the header here.

Which libploop: the system's by default. ``VZ7NATIVE_PLOOP_PREFIX=/opt/x`` takes
the header from ``/opt/x/include`` and the library from ``/opt/x/lib64`` or
``/opt/x/lib``, and records that directory as the module's run-time path;
``VZ7NATIVE_PLOOP_INCLUDE`` and ``VZ7NATIVE_PLOOP_LIBDIR`` set either part
alone. Before building, a small program is linked against the chosen header and
library and asked which library file the loader takes: a library that lacks
what the header declares stops the build here, not at import, with the
header's version and the library file (and its version) named.

``make_walk_ffibuilder`` builds ``vz7native._walk``, the directory walker's
core (getdents64 + fstatat). It neither includes the libploop header nor links
libploop, so the walker works on a host without them.

Both are functions, called by setuptools (``cffi_modules``) or directly
(``python build_ffi.py``): building one never needs what only the other needs.
"""
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER_NAME = "ploop/libploop.h"
MISSING_HEADER_HELP = (
    "cannot find <ploop/libploop.h>: install the libploop headers first "
    "(Debian/Ubuntu: apt-get install libploop-dev; Virtuozzo 7/CentOS 7: "
    "yum install ploop-devel), or point VZ7NATIVE_PLOOP_PREFIX at the "
    "prefix it is installed in (PREFIX/include/ploop/libploop.h)"
)
LIBRARY_NAME = "libploop.so"


def _package_version():
    path = os.path.join(HERE, "src", "vz7native", "__init__.py")
    with open(path) as f:
        match = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if match is None:
        raise RuntimeError("no __version__ in %s" % path)
    return match.group(1)


def _prefix():
    return os.environ.get("VZ7NATIVE_PLOOP_PREFIX", "")


def _include_dirs():
    dirs = []
    if os.environ.get("VZ7NATIVE_PLOOP_INCLUDE"):
        dirs.append(os.environ["VZ7NATIVE_PLOOP_INCLUDE"])
    elif _prefix():
        dirs.append(os.path.join(_prefix(), "include"))
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


def find_library_dir():
    """The directory to link libploop from and to record as the run-time path,
    or None for the linker's and the loader's default search."""
    if os.environ.get("VZ7NATIVE_PLOOP_LIBDIR"):
        candidates = [os.environ["VZ7NATIVE_PLOOP_LIBDIR"]]
    elif _prefix():
        candidates = [os.path.join(_prefix(), d) for d in ("lib64", "lib")]
    else:
        return None
    for directory in candidates:
        if os.path.exists(os.path.join(directory, LIBRARY_NAME)):
            return os.path.abspath(directory)
    raise SystemExit("vz7native build: no %s in %s (VZ7NATIVE_PLOOP_PREFIX / "
                     "VZ7NATIVE_PLOOP_LIBDIR)" % (LIBRARY_NAME, " or ".join(candidates)))


def library_version(path):
    """"7.0.280" for .../libploop.so.7.0.280 (symbolic links followed), or ""."""
    match = re.match(r"^libploop\.so\.(\d+(?:\.\d+)*)$",
                     os.path.basename(os.path.realpath(path)))
    return match.group(1) if match else ""


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


# Everything the shims below call that only one version has, so linking this
# proves the library offers what the header declares.
PROBE_SOURCE = r"""
#include <ploop/libploop.h>

int main(void)
{
    void *volatile used[] = {
        (void *)ploop_open_dd,
#if VZ7N_HAVE_READ_DD
        (void *)ploop_read_dd,
#else
        (void *)ploop_read_disk_descr, (void *)ploop_free_diskdescriptor,
#endif
#if VZ7N_HAVE_GET_PART
        (void *)ploop_get_part,
#else
        (void *)ploop_get_partition_by_mnt,
#endif
    };
    return used[0] == 0;
}
"""


def _compiler():
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def header_version(features):
    """"7.0.x" for a header that declares ploop_read_dd, else "1.x"."""
    return "7.0.x" if features["VZ7N_HAVE_READ_DD"] else "1.x"


def _linked_file(trace):
    """The libploop file in the linker's --trace output, or None."""
    match = re.search(r"(/[^\s()]*libploop\.so[^\s()]*)", trace)
    return os.path.normpath(match.group(1)) if match else None


def _without_trace(output):
    """The linker's messages without the file names --trace listed (GNU ld
    prints "/path" or, before 2.28, "-lname (/path)")."""
    return "\n".join(line for line in output.splitlines()
                     if line.strip() and not re.match(r"^(-l\S+ \()?/\S+\)?$", line))


def probe_library(header_path, library_dir, features):
    """Link and load a program against the chosen header and libploop; return
    the path of the libploop file the loader takes (as it opened it).

    Stops the build when the library lacks a function the header declares (a
    7.0.x header in front of a 1.15 library, say), naming both.
    """
    include_dir = os.path.dirname(os.path.dirname(header_path))
    work = tempfile.mkdtemp(prefix="vz7native-probe-")
    try:
        source, program = os.path.join(work, "probe.c"), os.path.join(work, "probe")
        with open(source, "w") as f:
            f.write(PROBE_SOURCE)
        argv = _compiler() + ["-o", program, source, "-I", include_dir]
        argv += ["-D%s=%d" % (k, v) for k, v in sorted(features.items())]
        if library_dir is not None:
            argv += ["-L", library_dir, "-Wl,-rpath," + library_dir]
        # --trace: the linker names the files it takes, libploop's among them.
        argv += shlex.split(os.environ.get("LDFLAGS", "")) + ["-Wl,--trace", "-lploop"]
        link = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True)
        if link.returncode != 0:
            linked = _linked_file(link.stdout)
            if linked is None:
                library = "the libploop %s" % ("in " + library_dir if library_dir
                                                else "of the linker's default search")
            else:
                version = library_version(linked)
                library = "%s (%s)" % (linked, "libploop " + version if version
                                       else os.path.basename(os.path.realpath(linked)))
            raise SystemExit(
                "vz7native build: %s is a libploop %s header, but %s lacks what it "
                "declares:\n%s\n(%s)\nBuild against the library that belongs to this "
                "header: set VZ7NATIVE_PLOOP_PREFIX (or VZ7NATIVE_PLOOP_LIBDIR) to where "
                "it is installed."
                % (header_path, header_version(features), library,
                   _without_trace(link.stdout), " ".join(argv)))
        # glibc's loader lists what it would load and exits (what ldd does).
        trace = subprocess.run([program], env=dict(os.environ, LD_TRACE_LOADED_OBJECTS="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    match = re.search(r"^\s*libploop\.so\S*\s+=>\s+(\S+)", trace.stdout, re.M)
    if trace.returncode != 0 or match is None:
        raise SystemExit("vz7native build: the probe linked against libploop cannot "
                         "load it:\n" + trace.stdout.strip())
    return match.group(1)


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
static const char *const VZ7N_HEADER_PATH;
static const char *const VZ7N_HEADER_FLAVOR;
static const char *const VZ7N_HEADER_VERSION;
static const char *const VZ7N_LIBRARY_DIR;
static const char *const VZ7N_LINKED_LIBRARY;
static const char *const VZ7N_LIBPLOOP_VERSION;
static const int VZ7N_HAVE_READ_DD;
static const int VZ7N_HAVE_FSLABEL;
static const int VZ7N_HAVE_CBT;
static const int VZ7N_HAVE_GET_PART;

/* Shims over what differs between 1.15 and 7.0.x, and process-wide helpers. */
int vz7n_read_dd(struct ploop_disk_images_data *di, const char *path);
int vz7n_set_fslabel(struct ploop_create_param *param, char *label);
int vz7n_set_snapshot_cbt(struct ploop_snapshot_param *param, char *cbt_uuid);
int vz7n_get_partition(struct ploop_disk_images_data *di, const char *device,
        const char *mount_point, char *out, int len);
void vz7n_clear_messages(void);
int vz7n_capture_devmapper(const char *owner);
const char *vz7n_devmapper_text(void);
const char *vz7n_library_path(void);
void vz7n_serial_lock(void);
void vz7n_serial_unlock(void);
"""

SOURCE_TEMPLATE = r"""
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <ploop/libploop.h>

static const char *const VZ7N_PACKAGE_VERSION = "%(package_version)s";
static const char *const VZ7N_HEADER_PATH = "%(header_path)s";
static const char *const VZ7N_HEADER_FLAVOR = "%(flavor)s";
static const char *const VZ7N_HEADER_VERSION = "%(header_version)s";
static const char *const VZ7N_LIBRARY_DIR = "%(library_dir)s";
static const char *const VZ7N_LINKED_LIBRARY = "%(linked_library)s";
static const char *const VZ7N_LIBPLOOP_VERSION = "%(libploop_version)s";

/* Re-read DiskDescriptor.xml (at path, di's own file) into di. 7.x's
 * ploop_read_dd answers -1 (with its message) for a descriptor it cannot parse.
 * 1.15 has no ploop_read_dd, but every locked getter re-reads the descriptor;
 * it reports one it cannot parse as a lock failure, so on that failure the file
 * is parsed on its own (that parser also answers -1) to tell a broken
 * descriptor from a lock that was not granted. Either -1 becomes
 * SYSEXIT_DISKDESCR, the code the ploop tool gives for it. */
int vz7n_read_dd(struct ploop_disk_images_data *di, const char *path)
{
    int rc;
#if VZ7N_HAVE_READ_DD
    (void)path;
    rc = ploop_read_dd(di);
#else
    struct ploop_disk_images_data *parsed = NULL;
    char buf[4096];
    rc = ploop_get_top_delta_fname(di, buf, sizeof(buf));
    if (rc == SYSEXIT_LOCK) {
        int parse_rc = ploop_read_disk_descr(&parsed, path);
        if (parse_rc != 0)
            rc = parse_rc;
        if (parsed != NULL)
            ploop_free_diskdescriptor(parsed);
    }
#endif
    return rc == -1 ? SYSEXIT_DISKDESCR : rc;
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

/* What libdevmapper said during the current call, per thread like libploop's
 * own text. libdevmapper prints to stderr unless its user registers a log
 * function, and libploop 7.x (which links it) registers none. */
#define VZ7N_DM_TEXT_SIZE 1024
#define VZ7N_DM_LEVEL_MASK 0x7f     /* without the _LOG_STDERR/_LOG_ONCE flags */
#define VZ7N_DM_LOG_WARN 4          /* syslog-like: fatal 2, error 3, warning 4 */
static __thread char vz7n_dm_text[VZ7N_DM_TEXT_SIZE];

typedef void (*vz7n_dm_log_fn)(int level, const char *file, int line,
        int dm_errno_or_class, const char *format, ...);

/* Keeps warnings and errors (what libdevmapper's default prints), one per
 * line, in vz7n_dm_text; cut at its size. */
static void vz7n_dm_log(int level, const char *file, int line,
        int dm_errno_or_class, const char *format, ...)
{
    size_t used = strlen(vz7n_dm_text);
    va_list args;

    (void)file; (void)line; (void)dm_errno_or_class;
    if ((level & VZ7N_DM_LEVEL_MASK) > VZ7N_DM_LOG_WARN || used + 2 >= sizeof(vz7n_dm_text))
        return;
    if (used > 0)
        vz7n_dm_text[used++] = '\n';
    va_start(args, format);
    vsnprintf(vz7n_dm_text + used, sizeof(vz7n_dm_text) - used, format, args);
    va_end(args);
}

/* Route the messages of the libdevmapper that the loaded library `owner` (a
 * path, as the loader opened it) depends on into vz7n_dm_text. 1 when
 * installed, 0 when `owner` uses no libdevmapper (libploop 1.15). The log
 * function is libdevmapper's process-wide setting. */
int vz7n_capture_devmapper(const char *owner)
{
    void *handle;
    void (*init)(vz7n_dm_log_fn);

    if (owner == NULL || owner[0] == '\0')
        return 0;
    handle = dlopen(owner, RTLD_LAZY | RTLD_NOLOAD);
    if (handle == NULL)
        return 0;
    /* A handle's lookup covers the library and what it depends on. */
    *(void **)&init = dlsym(handle, "dm_log_with_errno_init");
    if (init != NULL)
        init(vz7n_dm_log);
    dlclose(handle);
    return init != NULL;
}

const char *vz7n_devmapper_text(void)
{
    return vz7n_dm_text;
}

/* libploop keeps its last error text per thread and never clears it on
 * success; emptying it (and what libdevmapper said) before a call tells a
 * fresh message from a stale one. */
void vz7n_clear_messages(void)
{
    char *buf = (char *)ploop_get_last_error();
    if (buf != NULL)
        buf[0] = '\0';
    vz7n_dm_text[0] = '\0';
}

/* The file libploop was loaded from, as the loader opened it ("" if unknown). */
const char *vz7n_library_path(void)
{
    Dl_info info;

    if (dladdr((void *)ploop_open_dd, &info) == 0 || info.dli_fname == NULL)
        return "";
    return info.dli_fname;
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
    library_dir = find_library_dir()
    linked_library = probe_library(header_path, library_dir, features)

    ffibuilder = FFI()
    ffibuilder.cdef(CDEF_TEMPLATE % {"sysexit": ", ".join(names)})
    ffibuilder.set_source(
        "vz7native._ploop",
        SOURCE_TEMPLATE % {
            "package_version": _c_string(_package_version()),
            "header_path": _c_string(header_path),
            "flavor": flavor,
            "header_version": header_version(features),
            "library_dir": _c_string(library_dir or ""),
            "linked_library": _c_string(linked_library),
            "libploop_version": _c_string(library_version(linked_library)),
        },
        include_dirs=[] if include_dir == "/usr/include" else [include_dir],
        library_dirs=[library_dir] if library_dir else [],
        runtime_library_dirs=[library_dir] if library_dir else [],
        # dladdr() is in libdl before glibc 2.34 (CentOS 7 has 2.17).
        libraries=["ploop", "pthread", "dl"],
        # One build per Python: the 3.6 and 3.11 builds must not share a file name.
        py_limited_api=False,
        define_macros=[(k, "1" if v else "0") for k, v in sorted(features.items())],
    )
    return ffibuilder


WALK_BATCH = 256
WALK_NAMES_SIZE = 65536
WALK_DIRBUF_SIZE = 32768
WALK_STAT_FIELDS = 19

WALK_CDEF_TEMPLATE = r"""
#define VZ7W_BATCH ...
#define VZ7W_STAT_FIELDS ...
#define VZ7W_MORE ...
#define VZ7W_DONE ...
#define VZ7W_DIR ...
#define VZ7W_FAILED ...
#define VZ7W_UNLISTABLE ...
#define VZ7W_SLOW ...

struct vz7w_dir { int fd; ...; };
struct vz7w_batch {
    int64_t stats[%(stat_words)d];
    char names[%(names_size)d];
    unsigned char is_dir[%(batch)d];
    int nstats;
    int names_len;
    int error;
    ...;
};

static const char *const VZ7N_PACKAGE_VERSION;

void vz7w_dir_init(struct vz7w_dir *dir, int fd);
int vz7w_list(struct vz7w_dir *dir, struct vz7w_batch *batch);
int vz7w_list_stat(struct vz7w_dir *dir, struct vz7w_batch *batch);
int vz7w_stat(int dir_fd, const char *names, int count, struct vz7w_batch *batch);
"""

WALK_SOURCE_TEMPLATE = r"""
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static const char *const VZ7N_PACKAGE_VERSION = "%(package_version)s";

#define VZ7W_BATCH %(batch)d
#define VZ7W_NAMES_SIZE %(names_size)d
#define VZ7W_DIRBUF_SIZE %(dirbuf_size)d
#define VZ7W_STAT_FIELDS %(stat_fields)d

/* Why a batch ended; the names and stats before it are valid in every case.
 * MORE: call again. DONE: the directory (or the names given) is finished.
 * DIR: the last name is a directory, not stat'ed: the walker opens it.
 * FAILED: the last name could not be stat'ed (error). UNLISTABLE: reading the
 * directory failed (error); it is finished. SLOW: the last name's times do
 * not fit in int64 nanoseconds (beyond the years 1677..2262): Python stats it. */
#define VZ7W_MORE 0
#define VZ7W_DONE 1
#define VZ7W_DIR 2
#define VZ7W_FAILED 3
#define VZ7W_UNLISTABLE 4
#define VZ7W_SLOW 5
#define VZ7W_STATED (-1)

/* The kernel's record; glibc before 2.30 (CentOS 7 has 2.17) has no getdents64(). */
struct vz7w_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* One directory being listed: its descriptor (owned by the walker) and what
 * the last getdents64 returned. Allocated by Python, one per level. */
struct vz7w_dir {
    int fd;
    int pos;
    int end;
    int done;
    uint64_t buf[VZ7W_DIRBUF_SIZE / 8];  /* getdents64 records are 8-byte aligned */
};

/* One batch of results, reused for every call of a walk. stats holds one
 * os.stat_result layout per stat'ed name (see vz7w_fill); names holds the
 * names listed, each NUL-terminated, and is_dir whether each is a directory
 * by d_type (vz7w_list only). */
struct vz7w_batch {
    int64_t stats[VZ7W_BATCH * VZ7W_STAT_FIELDS];
    char names[VZ7W_NAMES_SIZE];
    unsigned char is_dir[VZ7W_BATCH];
    int count;
    int nstats;
    int names_len;
    int error;
};

void vz7w_dir_init(struct vz7w_dir *dir, int fd)
{
    dir->fd = fd;
    dir->pos = 0;
    dir->end = 0;
    dir->done = 0;
}

/* sec * 1000000000 + nsec fits in int64_t. */
static int vz7w_ns_fit(time_t sec)
{
    return sec >= -9223372036LL && sec <= 9223372035LL;
}

static void vz7w_times(int64_t *record, int index, const struct timespec *t)
{
    /* As CPython computes st_atime & co.: double(sec) + nsec * 1e-9, in two
     * roundings (built with -ffp-contract=off: no fused multiply-add). */
    double seconds = (double)t->tv_sec + (double)t->tv_nsec * 1e-9;
    record[7 + index] = (int64_t)t->tv_sec;
    memcpy(&record[10 + index], &seconds, sizeof(seconds));
    record[13 + index] = (int64_t)t->tv_sec * 1000000000LL + (int64_t)t->tv_nsec;
}

/* The 19 fields of os.stat_result on Linux, in its order, with the values
 * CPython's stat() gives them (uid and gid (uid_t)-1 as -1; st_ino unsigned,
 * the Python side reads that one field as uint64). */
static int vz7w_fill(int64_t *record, const struct stat *st)
{
    if (!vz7w_ns_fit(st->st_atim.tv_sec) || !vz7w_ns_fit(st->st_mtim.tv_sec)
            || !vz7w_ns_fit(st->st_ctim.tv_sec))
        return VZ7W_SLOW;
    record[0] = (int64_t)st->st_mode;
    record[1] = (int64_t)st->st_ino;
    record[2] = (int64_t)st->st_dev;
    record[3] = (int64_t)st->st_nlink;
    record[4] = st->st_uid == (uid_t)-1 ? -1 : (int64_t)st->st_uid;
    record[5] = st->st_gid == (gid_t)-1 ? -1 : (int64_t)st->st_gid;
    record[6] = (int64_t)st->st_size;
    vz7w_times(record, 0, &st->st_atim);
    vz7w_times(record, 1, &st->st_mtim);
    vz7w_times(record, 2, &st->st_ctim);
    record[16] = (int64_t)st->st_blksize;
    record[17] = (int64_t)st->st_blocks;
    record[18] = (int64_t)st->st_rdev;
    return VZ7W_STATED;
}

/* lstat name relative to dir_fd into the batch's next record. */
static int vz7w_stat_one(int dir_fd, const char *name, struct vz7w_batch *batch)
{
    struct stat st;
    int rc;

    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        batch->error = errno;
        return VZ7W_FAILED;
    }
    if (S_ISDIR(st.st_mode))
        return VZ7W_DIR;
    rc = vz7w_fill(&batch->stats[batch->nstats * VZ7W_STAT_FIELDS], &st);
    if (rc == VZ7W_STATED)
        batch->nstats++;
    return rc;
}

/* The next entry of dir other than . and .., reading on with getdents64 when
 * the buffer is used up: 1 with *entry set (not consumed), 0 at the end,
 * -errno if reading failed (the directory is then finished). */
static int vz7w_next(struct vz7w_dir *dir, struct vz7w_dirent64 **entry)
{
    long n;

    for (;;) {
        while (dir->pos < dir->end) {
            struct vz7w_dirent64 *e = (struct vz7w_dirent64 *)((char *)dir->buf + dir->pos);
            const char *name = e->d_name;
            if (!(name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))) {
                *entry = e;
                return 1;
            }
            dir->pos += e->d_reclen;
        }
        if (dir->done)
            return 0;
        n = syscall(SYS_getdents64, dir->fd, dir->buf, sizeof(dir->buf));
        if (n <= 0) {
            int err = errno;
            dir->done = 1;
            return n < 0 ? -err : 0;
        }
        dir->pos = 0;
        dir->end = (int)n;
    }
}

/* List the next entries of dir into batch; with_stat: also lstat each one
 * that is not a directory by d_type, stopping at the first directory. */
static int vz7w_read(struct vz7w_dir *dir, struct vz7w_batch *batch, int with_stat)
{
    struct vz7w_dirent64 *e = NULL;
    char *name;
    size_t size;
    int rc;

    batch->count = batch->nstats = batch->names_len = batch->error = 0;
    while (batch->count < VZ7W_BATCH) {
        rc = vz7w_next(dir, &e);
        if (rc == 0)
            return VZ7W_DONE;
        if (rc < 0) {
            batch->error = -rc;
            return VZ7W_UNLISTABLE;
        }
        size = strlen(e->d_name) + 1;
        /* Never true for the first name: names holds more than a whole dirent buffer. */
        if (size > (size_t)(VZ7W_NAMES_SIZE - batch->names_len))
            return VZ7W_MORE;
        name = batch->names + batch->names_len;
        memcpy(name, e->d_name, size);
        batch->names_len += (int)size;
        dir->pos += e->d_reclen;
        if (!with_stat) {
            batch->is_dir[batch->count++] = e->d_type == DT_DIR;
            continue;
        }
        batch->count++;
        if (e->d_type == DT_DIR)
            return VZ7W_DIR;
        rc = vz7w_stat_one(dir->fd, name, batch);
        if (rc != VZ7W_STATED)
            return rc;
    }
    return VZ7W_MORE;
}

int vz7w_list(struct vz7w_dir *dir, struct vz7w_batch *batch)
{
    return vz7w_read(dir, batch, 0);
}

int vz7w_list_stat(struct vz7w_dir *dir, struct vz7w_batch *batch)
{
    return vz7w_read(dir, batch, 1);
}

/* lstat count names (each NUL-terminated, back to back) relative to dir_fd,
 * stopping at the first that is a directory or fails, and after VZ7W_BATCH. */
int vz7w_stat(int dir_fd, const char *names, int count, struct vz7w_batch *batch)
{
    int i, rc, limit = count < VZ7W_BATCH ? count : VZ7W_BATCH;

    batch->nstats = batch->error = 0;
    for (i = 0; i < limit; i++) {
        rc = vz7w_stat_one(dir_fd, names, batch);
        if (rc != VZ7W_STATED)
            return rc;
        names += strlen(names) + 1;
    }
    return limit == count ? VZ7W_DONE : VZ7W_MORE;
}
"""


def make_walk_ffibuilder():
    """The builder of ``vz7native._walk``: libc only, no libploop."""
    sizes = {"batch": WALK_BATCH, "names_size": WALK_NAMES_SIZE,
             "dirbuf_size": WALK_DIRBUF_SIZE, "stat_fields": WALK_STAT_FIELDS,
             "stat_words": WALK_BATCH * WALK_STAT_FIELDS}
    ffibuilder = FFI()
    ffibuilder.cdef(WALK_CDEF_TEMPLATE % sizes)
    ffibuilder.set_source(
        "vz7native._walk",
        WALK_SOURCE_TEMPLATE % dict(sizes, package_version=_c_string(_package_version())),
        py_limited_api=False,
        # st_atime & co. must round exactly as CPython's own conversion does.
        extra_compile_args=["-ffp-contract=off"],
    )
    return ffibuilder


if __name__ == "__main__":
    for make in (make_ffibuilder, make_walk_ffibuilder):
        make().compile(tmpdir=os.path.join(HERE, "src"), verbose=True)
