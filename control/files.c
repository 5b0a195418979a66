/*
 * Workspace files on behalf of the API. The daemon runs as root and the
 * sandbox can write its workspace, so every name is looked up beneath the
 * workspace fd with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), and
 * every change is an *at call on a directory fd found that way. No full path
 * is ever handed to a path-based call, so neither "..", an absolute path nor
 * a symlink the sandbox plants (or swaps in while we work) leads outside.
 *
 * Decisions:
 * - "" names the workspace itself: files_check_path accepts it and files_get
 *   lists it; files_put and files_delete refuse it (EINVAL).
 * - Empty components ("a//b", a trailing "/") are refused, not normalised:
 *   one spelling per file.
 * - A symlink inside the workspace is followed, by files_get and in the
 *   parent directories of files_put and files_delete, when the kernel finds
 *   it resolves beneath the workspace (EXDEV or ELOOP otherwise). The last
 *   component of a put or a delete is never followed: a put replaces a
 *   symlink by a regular file, a delete removes the link, not its target.
 * - files_get looks at the type through an O_PATH fd before opening
 *   anything, so a planted FIFO, socket or device gives EINVAL and is never
 *   opened (no hang, no side effect).
 * - files_put_stream copies a pipe into the temporary file as it comes,
 *   and renames it into place only when the other end says the body is
 *   whole (a byte on the commit pipe): a writer that dies or gives up
 *   mid-body leaves neither the temporary nor a partial file. The
 *   temporary has no name (O_TMPFILE) until all of it is written, so
 *   neither does a worker killed midway, which cleans up nothing.
 * - files_send is files_get for a forked worker: the answer (struct
 *   files_head, then the bytes) goes down a pipe, which blocks as the
 *   reader stops, so however large the file only 64 KiB is in memory.
 * - files_put leaves the caller's evbuffer as it was (not drained). A file
 *   it replaces keeps its permission bits (a script stays executable); a new
 *   one is 0644, new directories 0755, all owned by uid:gid.
 * - A directory listing gives "size" for regular files, 0 for the rest.
 * - A listing holds at most FILES_MAX_ENTRIES entries, the first by name,
 *   and says "truncated": true when the directory has more. Memory stays
 *   bounded however many there are: the names are kept in an array of
 *   twice the cap that is sorted and cut back to the cap when it fills,
 *   and only the entries listed are stat'ed.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <linux/openat2.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <json.h>

#include "common/common.h"
#include "control/control.h"

#define FILES_MAX_PATH		4095	/* bytes; PATH_MAX with the NUL */
#define FILES_MAX_NAME		255	/* bytes in one component */
#define FILES_MAX_COMPONENTS	64
#define FILES_MAX_TREE_DEPTH	256	/* levels files_delete descends */
#define FILES_RETRIES		4	/* against a sandbox swapping names */
#define FILES_TMP_PREFIX	".sbx-put-"
#define FILES_MAX_ENTRIES	10000	/* in one listing; docs/limits.md */
#define FILES_CHUNK		(64 * 1024)	/* bytes a copy moves at once */

/* Where files_put_at gets the bytes: an evbuffer, or a pipe. */
struct files_src {
	struct evbuffer	*buf;
	int		 datafd, commitfd;
	off_t		 max;
};

static int	files_open(int, const char *, int, mode_t, uint64_t);
static char	*files_split(const char *, const char **);
static int	files_opendir_make(int, const char *, int, const char *,
		    uid_t, gid_t);
static int	files_mkparents(int, char *, uid_t, gid_t);
static void	files_tmpname(char *, size_t);
static int	files_open_unnamed(int, char *, size_t);
static int	files_link_unnamed(int, const char *, char *, size_t);
static int	files_write_all(int, struct evbuffer *);
static int	files_write_mem(int, const void *, size_t);
static int	files_copy_pipe(int, const struct files_src *);
static int	files_put_at(int, const char *, const struct files_src *,
		    uid_t, gid_t, int *);
static int	files_name_cmp(const void *, const void *);
static void	files_names_cut(char **, size_t *, size_t);
static int	files_list(int, char **);
static int	files_rm_entry(int, const char *, int);
static int	files_rm_tree(int, const char *, int);

/*
 * openat2 beneath dirfd, never through a magic link, close-on-exec; retried
 * when the kernel asks (EAGAIN: a rename raced a ".." in a symlink target).
 * Returns the fd, or -1 with errno set.
 */
static int
files_open(int dirfd, const char *path, int flags, mode_t mode,
    uint64_t resolve)
{
	struct open_how	how;
	int		fd, tries;

	memset(&how, 0, sizeof how);
	how.flags = (uint64_t)flags | O_CLOEXEC;
	how.mode = (flags & O_CREAT) ? mode : 0;
	how.resolve = resolve | RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
	for (tries = 0; tries < 8; tries++) {
		fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
		if (fd != -1 || (errno != EAGAIN && errno != EINTR))
			return fd;
	}
	return -1;
}

/* Check an API path without touching the disk. */
int
files_check_path(const char *path, const char **why)
{
	const char	*p, *start, *dummy;
	size_t		 n;
	int		 ncomp = 0;

	if (why == NULL)
		why = &dummy;
	*why = NULL;
	if (path == NULL) {
		*why = "no path";
		return EINVAL;
	}
	/* The workspace itself; put and delete refuse it on their own. */
	if (*path == '\0')
		return 0;
	if (strlen(path) > FILES_MAX_PATH) {
		*why = "path longer than 4095 bytes";
		return EINVAL;
	}
	if (*path == '/') {
		*why = "absolute path";
		return EINVAL;
	}
	start = path;
	for (p = path;; p++) {
		if (*p != '/' && *p != '\0') {
			if ((unsigned char)*p < 0x20 || *p == 0x7f) {
				*why = "control character in path";
				return EINVAL;
			}
			continue;
		}
		n = p - start;
		if (n == 0) {
			*why = "empty path component (\"//\" or trailing \"/\")";
			return EINVAL;
		}
		if ((n == 1 && start[0] == '.') ||
		    (n == 2 && start[0] == '.' && start[1] == '.')) {
			*why = "\".\" or \"..\" in path";
			return EINVAL;
		}
		if (n > FILES_MAX_NAME) {
			*why = "path component longer than 255 bytes";
			return EINVAL;
		}
		if (++ncomp > FILES_MAX_COMPONENTS) {
			*why = "more than 64 path components";
			return EINVAL;
		}
		if (*p == '\0')
			break;
		start = p + 1;
	}
	return 0;
}

/*
 * The API's spelling of a path (the URL after .../files/, still
 * %-encoded) made into a checked workspace path: decoded, one trailing
 * "/" dropped ("files/src/" names the directory "src", as a user would
 * mean), then files_check_path. Kept here so the API and the fuzz target
 * use the one function.
 */
int
files_api_path(const char *rest, size_t len, char **path, const char **why)
{
	const char	*dummy;
	size_t		 n;
	int		 error;

	if (why == NULL)
		why = &dummy;
	*why = NULL;
	*path = NULL;
	if (rest == NULL || len == 0) {
		*path = xstrdup("");
		return 0;
	}
	if (http_url_decode(rest, len, path) == -1) {
		*why = "a bad %-escape or a NUL byte";
		return EINVAL;
	}
	n = strlen(*path);
	if (n > 1 && (*path)[n - 1] == '/' && (*path)[n - 2] != '/')
		(*path)[n - 1] = '\0';
	if (**path != '\0' && (error = files_check_path(*path, why)) != 0) {
		free(*path);
		*path = NULL;
		return error;
	}
	return 0;
}

/*
 * Split a checked, non-empty path: returns the parent, malloc'd ("" for
 * the workspace), and points *base at the last component in path.
 */
static char *
files_split(const char *path, const char **base)
{
	const char	*slash;

	if ((slash = strrchr(path, '/')) == NULL) {
		*base = path;
		return xstrdup("");
	}
	*base = slash + 1;
	return xstrndup(path, slash - path);
}

/*
 * Open directory prefix (relative to the workspace; its last component is
 * comp, in directory cur), making it if it is missing. Returns an O_RDONLY
 * fd, or -1 with errno.
 */
static int
files_opendir_make(int wsfd, const char *prefix, int cur, const char *comp,
    uid_t uid, gid_t gid)
{
	int	fd, saved, tries;

	for (tries = 0; tries < FILES_RETRIES; tries++) {
		/*
		 * From the workspace, so a symlink in the parents resolves as
		 * it does for files_get (beneath the workspace, not cur).
		 */
		fd = files_open(wsfd, prefix, O_RDONLY | O_DIRECTORY, 0, 0);
		if (fd != -1 || errno != ENOENT)
			return fd;
		if (mkdirat(cur, comp, 0755) == -1) {
			/* Made meanwhile, or a dangling symlink: look again. */
			if (errno == EEXIST)
				continue;
			return -1;
		}
		/* What we just made, never a symlink swapped in for it. */
		fd = files_open(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW,
		    0, RESOLVE_NO_SYMLINKS);
		if (fd == -1)
			return -1;
		if (fchown(fd, uid, gid) == -1 || fchmod(fd, 0755) == -1) {
			saved = errno;
			close(fd);
			errno = saved;
			return -1;
		}
		return fd;
	}
	errno = ENOENT;	/* still missing after mkdir: a dangling symlink */
	return -1;
}

/*
 * Open (making what is missing) the parent directory of a put; parent is
 * modified during the walk and restored. Returns an O_RDONLY directory fd,
 * or -1 with errno.
 */
static int
files_mkparents(int wsfd, char *parent, uid_t uid, gid_t gid)
{
	char	*comp, *end;
	int	 cur, fd, saved;

	if ((cur = files_open(wsfd, ".", O_RDONLY | O_DIRECTORY, 0, 0)) == -1)
		return -1;
	if (*parent == '\0')
		return cur;
	comp = parent;
	for (;;) {
		if ((end = strchr(comp, '/')) != NULL)
			*end = '\0';
		fd = files_opendir_make(wsfd, parent, cur, comp, uid, gid);
		saved = errno;
		close(cur);
		if (fd == -1) {
			errno = saved;
			return -1;
		}
		cur = fd;
		if (end == NULL)
			return cur;
		*end = '/';
		comp = end + 1;
	}
}

/* A fresh temporary name, FILES_TMP_PREFIX and six random characters. */
static void
files_tmpname(char *buf, size_t len)
{
	static const char	 chars[] = "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	unsigned char		 rnd[6];
	size_t			 i, n;

	random_bytes(rnd, sizeof rnd);
	n = strlen(FILES_TMP_PREFIX);
	if (len < n + sizeof rnd + 1)
		fatalx("files_tmpname: buffer too small");
	memcpy(buf, FILES_TMP_PREFIX, n);
	for (i = 0; i < sizeof rnd; i++)
		buf[n++] = chars[rnd[i] % (sizeof chars - 1)];
	buf[n] = '\0';
}

/*
 * An unnamed regular file in dirfd (O_TMPFILE), and in proc the
 * /proc/self/fd link that names it later (files_link_unnamed); -1 if the
 * file system cannot make one or /proc is not there to link it by.
 */
static int
files_open_unnamed(int dirfd, char *proc, size_t len)
{
	int	fd;

	fd = files_open(dirfd, ".", O_WRONLY | O_TMPFILE, 0,
	    RESOLVE_NO_SYMLINKS);
	if (fd == -1)
		return -1;
	snprintf(proc, len, "/proc/self/fd/%d", fd);
	if (access(proc, F_OK) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Give the unnamed file behind proc a fresh temporary name in dirfd, put
 * in tmp; 0 or an errno value. By /proc, not AT_EMPTY_PATH: that one
 * needs CAP_DAC_READ_SEARCH, which the service does not keep.
 */
static int
files_link_unnamed(int dirfd, const char *proc, char *tmp, size_t len)
{
	int	tries;

	for (tries = 0; tries < 16; tries++) {
		files_tmpname(tmp, len);
		if (linkat(AT_FDCWD, proc, dirfd, tmp, AT_SYMLINK_FOLLOW) == 0)
			return 0;
		if (errno != EEXIST)
			break;
	}
	tmp[0] = '\0';
	return errno;
}

/* Write len bytes at p to fd, whatever it takes; 0 or an errno value. */
static int
files_write_mem(int fd, const void *p, size_t len)
{
	const char	*c = p;
	ssize_t		 w;

	while (len > 0) {
		if ((w = write(fd, c, len)) == -1) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		if (w == 0)
			return EIO;
		c += w;
		len -= w;
	}
	return 0;
}

/* Write all of data (left in place) to fd; 0 or an errno value. */
static int
files_write_all(int fd, struct evbuffer *data)
{
	struct evbuffer_iovec	*vec;
	int			 n, i, error = 0;

	if (data == NULL ||
	    (n = evbuffer_peek(data, -1, NULL, NULL, 0)) <= 0)
		return 0;
	vec = xcalloc(n, sizeof *vec);
	n = evbuffer_peek(data, -1, NULL, vec, n);
	for (i = 0; i < n && error == 0; i++)
		error = files_write_mem(fd, vec[i].iov_base, vec[i].iov_len);
	free(vec);
	return error;
}

/*
 * Copy src's data pipe to fd until its end, then ask the commit pipe
 * whether that end was the body's (a byte) or the writer giving up (none):
 * 0, ECONNABORTED, EFBIG past src->max, or the errno of a read or write.
 */
static int
files_copy_pipe(int fd, const struct files_src *src)
{
	char	*buf, c;
	off_t	 total = 0;
	ssize_t	 n;
	int	 error = 0;

	buf = xmalloc(FILES_CHUNK);
	for (;;) {
		if ((n = read(src->datafd, buf, FILES_CHUNK)) == -1) {
			if (errno == EINTR)
				continue;
			error = errno;
			break;
		}
		if (n == 0)
			break;
		if ((total += n) > src->max) {
			error = EFBIG;
			break;
		}
		if ((error = files_write_mem(fd, buf, n)) != 0)
			break;
	}
	free(buf);
	if (error != 0)
		return error;
	do
		n = read(src->commitfd, &c, 1);
	while (n == -1 && errno == EINTR);
	return n == 1 ? 0 : ECONNABORTED;
}

/* Write data atomically at path beneath the workspace. */
int
files_put(int wsfd, const char *path, struct evbuffer *data, uid_t uid,
    gid_t gid, int *created)
{
	struct files_src	src;

	memset(&src, 0, sizeof src);
	src.buf = data;
	src.datafd = src.commitfd = -1;
	return files_put_at(wsfd, path, &src, uid, gid, created);
}

/* Write what comes down datafd atomically, once commitfd says it is all. */
int
files_put_stream(int wsfd, const char *path, int datafd, int commitfd,
    off_t max, uid_t uid, gid_t gid, int *created)
{
	struct files_src	src;

	memset(&src, 0, sizeof src);
	src.datafd = datafd;
	src.commitfd = commitfd;
	src.max = max;
	return files_put_at(wsfd, path, &src, uid, gid, created);
}

/* files_put and files_put_stream: the temporary, the bytes, the rename. */
static int
files_put_at(int wsfd, const char *path, const struct files_src *src,
    uid_t uid, gid_t gid, int *created)
{
	struct stat	 st;
	char		*parent = NULL, tmp[32], proc[64];
	const char	*base, *why;
	mode_t		 mode = 0644;
	int		 dirfd = -1, fd = -1, error, tries, isnew = 0;
	int		 unnamed;

	tmp[0] = '\0';
	if (created != NULL)
		*created = 0;
	if ((error = files_check_path(path, &why)) != 0)
		return error;
	if (*path == '\0')
		return EINVAL;	/* the workspace itself is no file */
	parent = files_split(path, &base);
	if ((dirfd = files_mkparents(wsfd, parent, uid, gid)) == -1) {
		error = errno;
		goto fail;
	}

	/*
	 * What the name is now, never followed: a directory stays (EISDIR);
	 * a symlink is replaced by the rename below, not written through.
	 */
	if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISDIR(st.st_mode)) {
			error = EISDIR;
			goto fail;
		}
		if (S_ISREG(st.st_mode))
			mode = st.st_mode & 0777;
	} else if (errno == ENOENT)
		isnew = 1;
	else {
		error = errno;
		goto fail;
	}

	/*
	 * The bytes go into an unnamed file, named only once whole and then
	 * renamed over base (atomic, in the same directory): a worker killed
	 * midway (SIGKILL, the OOM killer, a fatal exit) runs no cleanup and
	 * must leave nothing behind. Without O_TMPFILE, a named temporary,
	 * removed on every failure we live through.
	 */
	fd = files_open_unnamed(dirfd, proc, sizeof proc);
	unnamed = fd != -1;
	for (tries = 0; fd == -1 && tries < 16; tries++) {
		files_tmpname(tmp, sizeof tmp);
		fd = files_open(dirfd, tmp,
		    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600,
		    RESOLVE_NO_SYMLINKS);
		if (fd != -1 || errno != EEXIST)
			break;
	}
	if (fd == -1) {
		error = errno;
		tmp[0] = '\0';
		goto fail;
	}
	if (src->buf != NULL || src->datafd == -1)
		error = files_write_all(fd, src->buf);
	else
		error = files_copy_pipe(fd, src);
	if (error != 0)
		goto fail;
	if (fchown(fd, uid, gid) == -1 || fchmod(fd, mode) == -1 ||
	    fsync(fd) == -1) {
		error = errno;
		goto fail;
	}
	if (unnamed &&
	    (error = files_link_unnamed(dirfd, proc, tmp, sizeof tmp)) != 0)
		goto fail;
	error = close(fd) == -1 ? errno : 0;
	fd = -1;
	if (error != 0)
		goto fail;
	/* EISDIR here if a directory appeared at base meanwhile. */
	if (renameat(dirfd, tmp, dirfd, base) == -1) {
		error = errno;
		goto fail;
	}
	tmp[0] = '\0';
	/* The new name is in place; make it durable. */
	if (fsync(dirfd) == -1) {
		error = errno;
		goto fail;
	}
	if (created != NULL)
		*created = isnew;
	close(dirfd);
	free(parent);
	return 0;

fail:
	if (fd != -1)
		close(fd);
	/* Never leave a half-written temporary behind. */
	if (tmp[0] != '\0')
		unlinkat(dirfd, tmp, 0);
	if (dirfd != -1)
		close(dirfd);
	free(parent);
	return error;
}

/* qsort comparator for an array of names. */
static int
files_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sort names[0..*n) and keep the first keep of them. */
static void
files_names_cut(char **names, size_t *n, size_t keep)
{
	size_t	i;

	if (*n > 1)
		qsort(names, *n, sizeof *names, files_name_cmp);
	for (i = keep; i < *n; i++)
		free(names[i]);
	if (*n > keep)
		*n = keep;
}

/* List the directory open on fd (always closed) as the API's JSON. */
static int
files_list(int fd, char **listing)
{
	struct json_object	*root, *entries, *e;
	struct dirent		*de;
	struct stat		 st;
	DIR			*dir;
	char			**names = NULL, mtime[32];
	const char		*type;
	size_t			 n = 0, cap = 0, i;
	int64_t			 ms;
	int			 error = 0, truncated = 0;

	if ((dir = fdopendir(fd)) == NULL) {
		error = errno;
		close(fd);
		return error;
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(dir)) == NULL) {
			error = errno;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (n == 2 * FILES_MAX_ENTRIES) {
			/* Full: keep the first by name, forget the rest. */
			files_names_cut(names, &n, FILES_MAX_ENTRIES);
			truncated = 1;
		}
		if (n == cap) {
			cap = cap == 0 ? 64 : cap * 2;
			names = xreallocarray(names, cap, sizeof *names);
		}
		names[n++] = xstrdup(de->d_name);
	}
	if (error != 0)
		goto out;
	if (n > FILES_MAX_ENTRIES)
		truncated = 1;
	files_names_cut(names, &n, FILES_MAX_ENTRIES);

	root = json_object_new_object();
	entries = json_object_new_array();
	if (root == NULL || entries == NULL)
		fatalx("files_list: out of memory");
	for (i = 0; i < n; i++) {
		/* The entry itself: a symlink is listed, never followed. */
		if (fstatat(dirfd(dir), names[i], &st,
		    AT_SYMLINK_NOFOLLOW) == -1)
			continue;	/* removed since readdir */
		if (S_ISREG(st.st_mode))
			type = "file";
		else if (S_ISDIR(st.st_mode))
			type = "dir";
		else if (S_ISLNK(st.st_mode))
			type = "symlink";
		else
			type = "other";
		ms = (int64_t)st.st_mtim.tv_sec * 1000 +
		    st.st_mtim.tv_nsec / 1000000;
		time_format_rfc3339(ms, mtime, sizeof mtime);
		if ((e = json_object_new_object()) == NULL)
			fatalx("files_list: out of memory");
		json_object_object_add(e, "name",
		    json_object_new_string(names[i]));
		json_object_object_add(e, "type", json_object_new_string(type));
		json_object_object_add(e, "size", json_object_new_int64(
		    S_ISREG(st.st_mode) ? (int64_t)st.st_size : 0));
		json_object_object_add(e, "mtime",
		    json_object_new_string(mtime));
		json_object_array_add(entries, e);
	}
	json_object_object_add(root, "entries", entries);
	json_object_object_add(root, "truncated",
	    json_object_new_boolean(truncated));
	*listing = xstrdup(json_object_to_json_string_ext(root,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);

out:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(dir);
	return error;
}

/* Read a file or list a directory beneath the workspace. */
int
files_get(int wsfd, const char *path, int *fdp, off_t *size, char **listing)
{
	struct stat	 st, st2;
	const char	*why, *name;
	int		 pfd = -1, fd = -1, flags, error;

	*fdp = -1;
	*size = 0;
	*listing = NULL;
	if ((error = files_check_path(path, &why)) != 0)
		return error;
	name = *path == '\0' ? "." : path;

	/*
	 * O_PATH first: see what it is without opening it, so a FIFO the
	 * sandbox planted cannot hang us and a device is never opened.
	 */
	if ((pfd = files_open(wsfd, name, O_PATH, 0, 0)) == -1)
		return errno;
	if (fstat(pfd, &st) == -1) {
		error = errno;
		goto fail;
	}
	if (S_ISDIR(st.st_mode))
		flags = O_RDONLY | O_DIRECTORY;
	else if (S_ISREG(st.st_mode))
		flags = O_RDONLY | O_NOCTTY | O_NONBLOCK;
	else {
		error = EINVAL;
		goto fail;
	}
	/*
	 * Open it for real by the same lookup, and check it is still the
	 * inode we looked at. O_NONBLOCK: should a FIFO be swapped in, the
	 * open returns at once and the check refuses it; and a lease the
	 * sandbox holds on its file gives EAGAIN instead of a 45 s block.
	 */
	if ((fd = files_open(wsfd, name, flags, 0, 0)) == -1) {
		error = errno;
		goto fail;
	}
	if (fstat(fd, &st2) == -1) {
		error = errno;
		goto fail;
	}
	if (st2.st_dev != st.st_dev || st2.st_ino != st.st_ino ||
	    (st2.st_mode & S_IFMT) != (st.st_mode & S_IFMT)) {
		error = EAGAIN;
		goto fail;
	}
	close(pfd);

	if (S_ISDIR(st2.st_mode))
		return files_list(fd, listing);	/* closes fd */
	if (fcntl(fd, F_SETFL, 0) == -1) {
		error = errno;
		close(fd);
		return error;
	}
	*fdp = fd;
	*size = st2.st_size;
	return 0;

fail:
	if (fd != -1)
		close(fd);
	close(pfd);
	return error;
}

/*
 * files_get, its answer written to outfd: a struct files_head, then
 * exactly head.size bytes (the file's, or the listing's JSON). 0 once all
 * is written (head.error included), else the errno of the failure; the
 * reader sees fewer bytes than the head said and knows it.
 */
int
files_send(int wsfd, const char *path, int outfd)
{
	struct files_head	 head;
	char			*listing = NULL, *buf;
	off_t			 size = 0, left;
	ssize_t			 n;
	int			 fd = -1, error;

	memset(&head, 0, sizeof head);
	head.error = files_get(wsfd, path, &fd, &size, &listing);
	if (head.error == 0 && listing != NULL) {
		head.is_dir = 1;
		head.size = (int64_t)strlen(listing);
	} else if (head.error == 0)
		head.size = (int64_t)size;
	if ((error = files_write_mem(outfd, &head, sizeof head)) != 0 ||
	    head.error != 0)
		goto out;
	if (listing != NULL) {
		error = files_write_mem(outfd, listing, strlen(listing));
		goto out;
	}
	/* The size we said, however the file changes meanwhile. */
	buf = xmalloc(FILES_CHUNK);
	for (left = size; left > 0 && error == 0; left -= n) {
		n = read(fd, buf, left < FILES_CHUNK ? (size_t)left :
		    FILES_CHUNK);
		if (n == -1 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n <= 0) {
			error = n == 0 ? EAGAIN : errno;	/* it shrank */
			break;
		}
		error = files_write_mem(outfd, buf, n);
	}
	free(buf);

out:
	if (fd != -1)
		close(fd);
	free(listing);
	return error;
}

/*
 * Remove name in directory dfd whatever it is, never following a symlink;
 * retried when the sandbox swaps a file for a directory or back.
 */
static int
files_rm_entry(int dfd, const char *name, int depth)
{
	int	tries, error = EAGAIN;

	for (tries = 0; tries < FILES_RETRIES; tries++) {
		if (unlinkat(dfd, name, 0) == 0)
			return 0;
		/* Linux says EISDIR for a directory. */
		if (errno != EISDIR)
			return errno;
		error = files_rm_tree(dfd, name, depth);
		/* Swapped for a non-directory, or refilled: again. */
		if (error != ENOTDIR && error != ENOTEMPTY)
			return error;
	}
	return error;
}

/*
 * Remove directory name in dfd and everything in it, by fds only: each
 * level is opened with O_NOFOLLOW beneath its parent, never through a
 * symlink or into another mount. ENOTDIR if name is not a directory (now).
 */
static int
files_rm_tree(int dfd, const char *name, int depth)
{
	struct dirent	*de;
	DIR		*dir;
	int		 fd, error = 0;

	/* One fd a level: bound it (a deeper tree gives ENAMETOOLONG). */
	if (depth >= FILES_MAX_TREE_DEPTH)
		return ENAMETOOLONG;
	fd = files_open(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0,
	    RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV);
	if (fd == -1)
		return errno == ELOOP ? ENOTDIR : errno;
	if ((dir = fdopendir(fd)) == NULL) {
		error = errno;
		close(fd);
		return error;
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(dir)) == NULL) {
			error = errno;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		error = files_rm_entry(dirfd(dir), de->d_name, depth + 1);
		/* Gone already is fine. */
		if (error != 0 && error != ENOENT)
			break;
		error = 0;
	}
	closedir(dir);
	if (error != 0)
		return error;
	if (unlinkat(dfd, name, AT_REMOVEDIR) == -1)
		return errno;
	return 0;
}

/* Remove a file, a symlink (not its target) or a directory tree. */
int
files_delete(int wsfd, const char *path)
{
	char		*parent;
	const char	*base, *why;
	int		 dirfd, error;

	if ((error = files_check_path(path, &why)) != 0)
		return error;
	if (*path == '\0')
		return EINVAL;	/* never the workspace itself */
	parent = files_split(path, &base);
	dirfd = files_open(wsfd, *parent == '\0' ? "." : parent,
	    O_RDONLY | O_DIRECTORY, 0, 0);
	if (dirfd == -1) {
		error = errno;
		free(parent);
		return error;
	}
	error = files_rm_entry(dirfd, base, 0);
	close(dirfd);
	free(parent);
	return error;
}
