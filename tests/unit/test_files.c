/*
 * control/files.c against a real workspace in a temporary directory, with
 * a sibling "outside" directory holding a secret: every attack (dot-dot,
 * absolute paths, planted symlinks, loops, FIFOs, names swapped while we
 * work) must leave the outside unread, unwritten and unremoved.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <linux/openat2.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <json.h>

#include "common/common.h"
#include "control/control.h"
#include "tests/unit/unit.h"

#define UID	1000
#define GID	1000

static const char	 secret[] = "top secret\n";
static char		 basedir[64], wsdir[128], outdir[128];
static int		 wsfd = -1;

/* A workspace-relative path as a full path, for the test's own checks. */
static const char *
ws(const char *rel)
{
	static char	buf[4][4200];
	static int	n;

	n = (n + 1) % 4;
	snprintf(buf[n], sizeof buf[n], "%s/%s", wsdir, rel);
	return buf[n];
}

/* Whole content of a file (malloc'd, NUL-terminated) or NULL. */
static char *
slurp_fd(int fd, size_t *lenp)
{
	char	*p = NULL;
	size_t	 len = 0;
	ssize_t	 n;

	for (;;) {
		p = xrealloc(p, len + 65536 + 1);
		if ((n = read(fd, p + len, 65536)) <= 0)
			break;
		len += n;
	}
	p[len] = '\0';
	if (lenp != NULL)
		*lenp = len;
	return p;
}

static char *
slurp(const char *path)
{
	char	*p;
	int	 fd;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW)) == -1)
		return NULL;
	p = slurp_fd(fd, NULL);
	close(fd);
	return p;
}

/* files_put of a string; also checks the buffer is left as it was. */
static int
put(const char *path, const char *s, int *created)
{
	struct evbuffer	*b = evbuffer_new();
	int		 error, dummy;

	evbuffer_add(b, s, strlen(s));
	error = files_put(wsfd, path, b, UID, GID,
	    created != NULL ? created : &dummy);
	CHECK(evbuffer_get_length(b) == strlen(s));
	evbuffer_free(b);
	return error;
}

/* files_get of a regular file as a string, or NULL with *error. */
static char *
get(const char *path, int *error)
{
	char	*p, *listing = NULL;
	off_t	 size = -1;
	size_t	 len;
	int	 fd = -1;

	*error = files_get(wsfd, path, &fd, &size, &listing);
	if (*error != 0) {
		CHECK(fd == -1 && listing == NULL);
		return NULL;
	}
	if (listing != NULL) {
		CHECK(fd == -1);
		return listing;
	}
	p = slurp_fd(fd, &len);
	CHECK((off_t)len == size);
	close(fd);
	return p;
}

/* Number of entries in a directory, or -1. */
static int
count_dir(const char *path)
{
	struct dirent	*de;
	DIR		*d;
	int		 n = 0;

	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static int	tmp_found;

static int
count_tmp_cb(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
	if (strncmp(path + ftw->base, ".sbx-put-", 9) == 0)
		tmp_found++;
	return 0;
}

/* Temporary files left anywhere below the base directory. */
static int
count_tmp(void)
{
	tmp_found = 0;
	nftw(basedir, count_tmp_cb, 16, FTW_PHYS);
	return tmp_found;
}

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* The secret is there, unchanged, alone; nothing new beside ws/outside. */
static int
outside_intact(void)
{
	char	*p, path[200];
	int	 ok;

	snprintf(path, sizeof path, "%s/secret", outdir);
	p = slurp(path);
	ok = p != NULL && strcmp(p, secret) == 0 && count_dir(outdir) == 1 &&
	    count_dir(basedir) == 2;
	free(p);
	return ok;
}

/* A fresh workspace and outside directory for each test. */
static void
setup(void)
{
	char	path[200];
	int	fd;

	if (wsfd != -1)
		close(wsfd);
	if (basedir[0] != '\0')
		nftw(basedir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	snprintf(basedir, sizeof basedir, "/tmp/sbx-files-XXXXXX");
	if (mkdtemp(basedir) == NULL)
		fatal("mkdtemp");
	snprintf(wsdir, sizeof wsdir, "%s/ws", basedir);
	snprintf(outdir, sizeof outdir, "%s/outside", basedir);
	if (mkdir(wsdir, 0755) == -1 || mkdir(outdir, 0755) == -1)
		fatal("mkdir");
	snprintf(path, sizeof path, "%s/secret", outdir);
	if ((fd = open(path, O_WRONLY | O_CREAT, 0600)) == -1 ||
	    write(fd, secret, strlen(secret)) != (ssize_t)strlen(secret))
		fatal("secret");
	close(fd);
	if ((wsfd = open(wsdir, O_PATH | O_DIRECTORY | O_CLOEXEC)) == -1)
		fatal("open ws");
}

static void
test_check_path(void)
{
	static const char *good[] = {
		"", "a", "a/b/c.txt", ".hidden", "..x", "x..", "...", "a.b/..c",
		"%2e%2e", "%2e%2e/x", "with space", "back\\slash", "ünïcode",
	};
	static const char *bad[] = {
		"/", "/etc/passwd", ".", "..", "../x", "a/..", "a/../../x",
		"a/./b", "./a", "a//b", "a/", "//a", "a\001b", "a\nb",
		"tab\there", "del\177",
	};
	const char	*why;
	char		 buf[8192];
	size_t		 i;

	for (i = 0; i < nitems(good); i++) {
		why = "unset";
		CHECK(files_check_path(good[i], &why) == 0);
		CHECK(why == NULL);
	}
	for (i = 0; i < nitems(bad); i++) {
		why = NULL;
		CHECK(files_check_path(bad[i], &why) == EINVAL);
		CHECK(why != NULL && *why != '\0');
	}
	CHECK(files_check_path(NULL, &why) == EINVAL);
	CHECK(files_check_path("../x", NULL) == EINVAL);

	/* 255 bytes a component is fine, 256 is not. */
	memset(buf, 'a', 256);
	buf[255] = '\0';
	CHECK(files_check_path(buf, &why) == 0);
	buf[255] = 'a';
	buf[256] = '\0';
	CHECK(files_check_path(buf, &why) == EINVAL);

	/* 64 components are fine, 65 are not. */
	for (i = 0; i < 65; i++)
		memcpy(buf + 2 * i, "a/", 2);
	buf[2 * 64 - 1] = '\0';
	CHECK(files_check_path(buf, &why) == 0);
	buf[2 * 64 - 1] = '/';
	buf[2 * 65 - 1] = '\0';
	CHECK(files_check_path(buf, &why) == EINVAL);

	/* 4095 bytes are fine, 4096 are not. */
	for (i = 0; i < 4096; i++)
		buf[i] = (i % 32 == 31) ? '/' : 'b';
	buf[4095] = '\0';
	CHECK(files_check_path(buf, &why) == EINVAL);	/* 128 components */
	for (i = 0; i < 4096; i++)
		buf[i] = (i % 200 == 199) ? '/' : 'b';
	buf[4095] = '\0';
	CHECK(files_check_path(buf, &why) == 0);
	buf[4095] = 'b';
	buf[4096] = '\0';
	CHECK(files_check_path(buf, &why) == EINVAL);
}

/* files_api_path: the files URL as the API gets it, %-encoded. */
static void
test_api_path(void)
{
	static const struct {
		const char	*rest;
		const char	*path;	/* NULL: refused */
	} cases[] = {
		{ "", "" },
		{ "src/main.c", "src/main.c" },
		{ "src/", "src" },
		{ "src%2Fmain.c", "src/main.c" },
		{ "My%20Documents/a%2Bb.txt", "My Documents/a+b.txt" },
		{ "caf%C3%A9", "caf\xc3\xa9" },
		{ "src//", NULL },
		{ "/etc/passwd", NULL },
		{ "%2Fetc%2Fpasswd", NULL },
		{ "..%2F..%2Fetc", NULL },
		{ "%2e%2e/x", NULL },
		{ "a/%2E/b", NULL },
		{ "a%00b", NULL },
		{ "a%0ab", NULL },
		{ "a%2", NULL },
		{ "a%zz", NULL },
		{ "/", NULL },
	};
	const char	*why;
	char		*path;
	size_t		 i;

	for (i = 0; i < nitems(cases); i++) {
		why = "unset";
		path = NULL;
		if (cases[i].path != NULL) {
			CHECK(files_api_path(cases[i].rest,
			    strlen(cases[i].rest), &path, &why) == 0);
			CHECK(why == NULL);
			CHECK_STR(path, cases[i].path);
		} else {
			CHECK(files_api_path(cases[i].rest,
			    strlen(cases[i].rest), &path, &why) == EINVAL);
			CHECK(path == NULL && why != NULL && *why != '\0');
		}
		free(path);
	}
	/* No URL part at all: the workspace. */
	CHECK(files_api_path(NULL, 0, &path, NULL) == 0);
	CHECK_STR(path, "");
	free(path);
	/* Only len bytes are read: "src/x" cut to "src/". */
	CHECK(files_api_path("src/x", 4, &path, &why) == 0);
	CHECK_STR(path, "src");
	free(path);
}

static void
test_put(void)
{
	struct evbuffer	*b;
	struct stat	 st;
	char		*p, *big;
	size_t		 i, len;
	int		 created = -1, fd;

	setup();
	memset(&st, 0, sizeof st);
	CHECK(put("hello.txt", "hello\n", &created) == 0);
	CHECK(created == 1);
	p = slurp(ws("hello.txt"));
	CHECK_STR(p, "hello\n");
	free(p);
	CHECK(lstat(ws("hello.txt"), &st) == 0 && S_ISREG(st.st_mode) &&
	    (st.st_mode & 07777) == 0644);
	CHECK(st.st_uid == UID && st.st_gid == GID);

	/* Replace: not created, new content, mode kept. */
	chmod(ws("hello.txt"), 0750);
	CHECK(put("hello.txt", "bye", &created) == 0);
	CHECK(created == 0);
	p = slurp(ws("hello.txt"));
	CHECK_STR(p, "bye");
	free(p);
	CHECK(lstat(ws("hello.txt"), &st) == 0 &&
	    (st.st_mode & 07777) == 0750);

	/* Parents made, owned by the sandbox user, 0755. */
	CHECK(put("a/b/c/d.txt", "deep", &created) == 0);
	CHECK(created == 1);
	p = slurp(ws("a/b/c/d.txt"));
	CHECK_STR(p, "deep");
	free(p);
	CHECK(stat(ws("a"), &st) == 0 && S_ISDIR(st.st_mode) &&
	    st.st_uid == UID && st.st_gid == GID &&
	    (st.st_mode & 07777) == 0755);
	CHECK(stat(ws("a/b/c"), &st) == 0 && st.st_uid == UID);
	CHECK(put("a/b/e.txt", "sibling", NULL) == 0);

	/* Empty data, NULL data. */
	CHECK(put("empty", "", &created) == 0 && created == 1);
	CHECK(stat(ws("empty"), &st) == 0 && st.st_size == 0);
	CHECK(files_put(wsfd, "empty2", NULL, UID, GID, &created) == 0);
	CHECK(stat(ws("empty2"), &st) == 0 && st.st_size == 0);

	/* Binary content over many chains round-trips. */
	len = 3 * 1024 * 1024 + 17;
	big = xmalloc(len);
	for (i = 0; i < len; i++)
		big[i] = (char)(i * 7 + i / 4096);
	b = evbuffer_new();
	for (i = 0; i < len; i += 10000)
		evbuffer_add(b, big + i, len - i < 10000 ? len - i : 10000);
	CHECK(files_put(wsfd, "bin/blob", b, UID, GID, &created) == 0);
	CHECK(evbuffer_get_length(b) == len);
	evbuffer_free(b);
	if ((fd = open(ws("bin/blob"), O_RDONLY)) != -1) {
		size_t	got;

		p = slurp_fd(fd, &got);
		CHECK(got == len && memcmp(p, big, len) == 0);
		free(p);
		close(fd);
	} else
		CHECK(!"bin/blob missing");
	free(big);

	/* A name that is a percent escape stays a literal, harmless name. */
	CHECK(put("%2e%2e/x", "lit", &created) == 0 && created == 1);
	p = slurp(ws("%2e%2e/x"));
	CHECK_STR(p, "lit");
	free(p);

	CHECK(count_tmp() == 0);
	CHECK(outside_intact());
}

static void
test_put_errors(void)
{
	struct evbuffer	*b;
	struct rlimit	 old, lim;
	char		*p, *data;
	int		 created = -1;

	setup();
	CHECK(put("", "x", &created) == EINVAL);
	CHECK(put("../x", "x", &created) == EINVAL);
	CHECK(mkdir(ws("dir"), 0755) == 0);
	CHECK(put("dir", "x", &created) == EISDIR);
	CHECK(put("file", "old", NULL) == 0);
	CHECK(put("file/x", "x", NULL) == ENOTDIR);
	CHECK(put("file/x/y", "x", NULL) == ENOTDIR);

	/*
	 * A write failing half-way (a file size limit: EFBIG) leaves the
	 * old content and no temporary file.
	 */
	data = xmalloc(100000);
	memset(data, 'z', 100000);
	b = evbuffer_new();
	evbuffer_add(b, data, 100000);
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = 50000;
	setrlimit(RLIMIT_FSIZE, &lim);
	CHECK(files_put(wsfd, "file", b, UID, GID, &created) == EFBIG);
	CHECK(files_put(wsfd, "newfile", b, UID, GID, &created) == EFBIG);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_DFL);
	evbuffer_free(b);
	free(data);
	p = slurp(ws("file"));
	CHECK_STR(p, "old");
	free(p);
	CHECK(access(ws("newfile"), F_OK) == -1);
	CHECK(count_tmp() == 0);
	CHECK(count_dir(wsdir) == 2);
	CHECK(outside_intact());
}

static void
test_get(void)
{
	struct json_object	*j, *entries, *e, *v;
	char			*p;
	int			 error, i;

	setup();
	CHECK(put("b.txt", "bee", NULL) == 0);
	CHECK(put("a.txt", "a", NULL) == 0);
	CHECK(put("sub/c.txt", "sea", NULL) == 0);
	CHECK(symlink("b.txt", ws("link")) == 0);
	CHECK(symlink("../b.txt", ws("sub/up")) == 0);
	CHECK(symlink("sub", ws("sublink")) == 0);

	p = get("b.txt", &error);
	CHECK(error == 0);
	CHECK_STR(p, "bee");
	free(p);
	p = get("sub/c.txt", &error);
	CHECK_STR(p, "sea");
	free(p);
	/* Symlinks that stay inside are followed. */
	p = get("link", &error);
	CHECK_STR(p, "bee");
	free(p);
	p = get("sub/up", &error);
	CHECK_STR(p, "bee");
	free(p);
	p = get("sublink/c.txt", &error);
	CHECK_STR(p, "sea");
	free(p);

	CHECK(get("nope", &error) == NULL && error == ENOENT);
	CHECK(get("b.txt/x", &error) == NULL && error == ENOTDIR);
	CHECK(get("../outside/secret", &error) == NULL && error == EINVAL);
	CHECK(get("a/", &error) == NULL && error == EINVAL);

	/* The workspace listing: sorted, ., .. left out, types, sizes. */
	p = get("", &error);
	CHECK(error == 0 && p != NULL);
	j = p != NULL ? json_tokener_parse(p) : NULL;
	CHECK(j != NULL);
	if (j != NULL && json_object_object_get_ex(j, "entries", &entries) &&
	    json_object_array_length(entries) == 5) {
		static const char *names[] =
		    { "a.txt", "b.txt", "link", "sub", "sublink" };
		static const char *types[] =
		    { "file", "file", "symlink", "dir", "symlink" };
		static const int sizes[] = { 1, 3, 0, 0, 0 };

		for (i = 0; i < 5; i++) {
			e = json_object_array_get_idx(entries, i);
			CHECK(json_object_object_get_ex(e, "name", &v));
			CHECK_STR(json_object_get_string(v), names[i]);
			CHECK(json_object_object_get_ex(e, "type", &v));
			CHECK_STR(json_object_get_string(v), types[i]);
			CHECK(json_object_object_get_ex(e, "size", &v));
			CHECK(json_object_get_int(v) == sizes[i]);
			CHECK(json_object_object_get_ex(e, "mtime", &v));
			CHECK(strlen(json_object_get_string(v)) == 20 &&
			    json_object_get_string(v)[19] == 'Z');
		}
	} else
		CHECK(!"bad listing");
	json_object_put(j);
	free(p);

	p = get("sub", &error);
	CHECK(error == 0);
	j = p != NULL ? json_tokener_parse(p) : NULL;
	CHECK(j != NULL && json_object_object_get_ex(j, "entries", &entries) &&
	    json_object_array_length(entries) == 2);
	json_object_put(j);
	free(p);

	/* An empty directory. */
	CHECK(mkdir(ws("void"), 0755) == 0);
	p = get("void", &error);
	CHECK_STR(p, "{\"entries\":[],\"truncated\":false}");
	free(p);
	CHECK(outside_intact());
}

static void
test_delete(void)
{
	struct stat	st;
	char		*p;

	setup();
	CHECK(put("f", "x", NULL) == 0);
	CHECK(files_delete(wsfd, "f") == 0);
	CHECK(lstat(ws("f"), &st) == -1 && errno == ENOENT);
	CHECK(files_delete(wsfd, "f") == ENOENT);
	CHECK(files_delete(wsfd, "") == EINVAL);
	CHECK(files_delete(wsfd, "../outside/secret") == EINVAL);
	CHECK(files_delete(wsfd, "nodir/f") == ENOENT);

	/* A tree with files, empty dirs and symlinks out: only the tree goes. */
	CHECK(put("t/a/b/c/f1", "1", NULL) == 0);
	CHECK(put("t/a/f2", "2", NULL) == 0);
	CHECK(mkdir(ws("t/empty"), 0755) == 0);
	CHECK(symlink("../../outside", ws("t/a/out")) == 0);
	CHECK(symlink("../../outside/secret", ws("t/a/b/sec")) == 0);
	CHECK(symlink(outdir, ws("t/abs")) == 0);
	CHECK(mkfifo(ws("t/a/fifo"), 0644) == 0);
	CHECK(files_delete(wsfd, "t") == 0);
	CHECK(lstat(ws("t"), &st) == -1 && errno == ENOENT);
	CHECK(count_dir(wsdir) == 0);
	CHECK(outside_intact());

	/* A symlink goes, its target stays. */
	CHECK(put("target", "keep", NULL) == 0);
	CHECK(symlink("target", ws("l")) == 0);
	CHECK(files_delete(wsfd, "l") == 0);
	CHECK(lstat(ws("l"), &st) == -1);
	p = slurp(ws("target"));
	CHECK_STR(p, "keep");
	free(p);

	/* A symlink to a directory outside: the link goes, not the dir. */
	CHECK(symlink("../outside", ws("out")) == 0);
	CHECK(files_delete(wsfd, "out") == 0);
	CHECK(lstat(ws("out"), &st) == -1);
	CHECK(outside_intact());
	/* Through a symlinked parent that leaves: refused. */
	CHECK(symlink("../outside", ws("out")) == 0);
	CHECK(files_delete(wsfd, "out/secret") == EXDEV);
	CHECK(outside_intact());
	/* A symlinked parent that stays inside is followed. */
	CHECK(put("d/x", "x", NULL) == 0);
	CHECK(symlink("d", ws("dl")) == 0);
	CHECK(files_delete(wsfd, "dl/x") == 0);
	CHECK(lstat(ws("d/x"), &st) == -1 && lstat(ws("d"), &st) == 0);
}

static void
test_symlink_attacks(void)
{
	struct stat	 pw1, pw2;
	char		*p;
	int		 error, created;

	setup();
	CHECK(stat("/etc/passwd", &pw1) == 0);
	CHECK(symlink("../outside", ws("evil")) == 0);
	CHECK(symlink("../outside/secret", ws("sec")) == 0);
	CHECK(symlink("/etc/passwd", ws("abs")) == 0);
	CHECK(symlink(outdir, ws("absdir")) == 0);
	CHECK(symlink("loop2", ws("loop1")) == 0);
	CHECK(symlink("loop1", ws("loop2")) == 0);
	CHECK(symlink("self", ws("self")) == 0);
	CHECK(mkdir(ws("sub"), 0755) == 0);
	CHECK(symlink("../../outside", ws("sub/evil2")) == 0);
	CHECK(symlink("/proc/self/root/etc/passwd", ws("magic")) == 0);

	/* Reading through any of them: refused, nothing read. */
	CHECK(get("evil", &error) == NULL && error == EXDEV);
	CHECK(get("evil/secret", &error) == NULL && error == EXDEV);
	CHECK(get("sec", &error) == NULL && error == EXDEV);
	CHECK(get("abs", &error) == NULL && error == EXDEV);
	CHECK(get("absdir/secret", &error) == NULL && error == EXDEV);
	CHECK(get("sub/evil2/secret", &error) == NULL && error == EXDEV);
	CHECK(get("magic", &error) == NULL && error == EXDEV);
	CHECK(get("loop1", &error) == NULL && error == ELOOP);
	CHECK(get("self", &error) == NULL && error == ELOOP);

	/* Writing through a parent that leaves: refused, nothing written. */
	CHECK(put("evil/new", "x", NULL) == EXDEV);
	CHECK(put("evil/secret", "pwned", NULL) == EXDEV);
	CHECK(put("evil/deeper/new", "x", NULL) == EXDEV);
	CHECK(put("absdir/new", "x", NULL) == EXDEV);
	CHECK(put("sub/evil2/new", "x", NULL) == EXDEV);
	CHECK(put("loop1/x", "x", NULL) == ELOOP);
	/* Dangling symlinks as parents: nothing is made where they point. */
	CHECK(symlink("nowhere", ws("dangling")) == 0);
	CHECK(symlink("../outside/newdir", ws("dangling_out")) == 0);
	CHECK(put("dangling/x", "x", NULL) == ENOENT);
	CHECK(put("dangling_out/x", "x", NULL) == EXDEV);
	CHECK(access(ws("nowhere"), F_OK) == -1);
	CHECK(outside_intact());
	CHECK(count_tmp() == 0);

	/* Deleting through them: refused, nothing removed. */
	CHECK(files_delete(wsfd, "evil/secret") == EXDEV);
	CHECK(files_delete(wsfd, "absdir/secret") == EXDEV);
	CHECK(outside_intact());

	/* Writing onto a symlink replaces the link, never its target. */
	CHECK(put("sec", "mine", &created) == 0 && created == 0);
	CHECK(put("abs", "mine", &created) == 0 && created == 0);
	CHECK(put("evil", "mine", &created) == 0 && created == 0);
	CHECK(put("self", "mine", &created) == 0 && created == 0);
	p = get("sec", &error);
	CHECK_STR(p, "mine");
	free(p);
	CHECK(lstat(ws("abs"), &pw2) == 0 && S_ISREG(pw2.st_mode));
	CHECK(stat("/etc/passwd", &pw2) == 0);
	CHECK(pw1.st_size == pw2.st_size && pw1.st_ino == pw2.st_ino &&
	    pw1.st_mtim.tv_sec == pw2.st_mtim.tv_sec &&
	    pw1.st_mtim.tv_nsec == pw2.st_mtim.tv_nsec);
	CHECK(outside_intact());
	CHECK(count_tmp() == 0);
}

static void
test_special_files(void)
{
	struct sockaddr_un	 sun;
	char			*p;
	int			 error, s;

	setup();
	/* A planted FIFO must not hang files_get (SIGALRM kills us if so). */
	CHECK(mkfifo(ws("fifo"), 0666) == 0);
	CHECK(symlink("fifo", ws("fifolink")) == 0);
	alarm(5);
	CHECK(get("fifo", &error) == NULL && error == EINVAL);
	CHECK(get("fifolink", &error) == NULL && error == EINVAL);
	alarm(0);

	/* A FIFO as a parent is no directory, and does not hang either. */
	alarm(5);
	CHECK(put("fifo/x", "x", NULL) == ENOTDIR);
	CHECK(files_delete(wsfd, "fifo/x") == ENOTDIR);
	alarm(0);

	/* A socket: refused too. */
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", ws("sock"));
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(s != -1 && bind(s, (struct sockaddr *)&sun, sizeof sun) == 0);
	close(s);
	CHECK(get("sock", &error) == NULL && error == EINVAL);

	/* Listed as "other"; replaced or removed like anything else. */
	p = get("", &error);
	CHECK(p != NULL && strstr(p, "\"name\":\"fifo\",\"type\":\"other\"") !=
	    NULL);
	free(p);
	CHECK(put("fifo", "now a file", NULL) == 0);
	p = get("fifo", &error);
	CHECK_STR(p, "now a file");
	free(p);
	CHECK(files_delete(wsfd, "sock") == 0);
	CHECK(files_delete(wsfd, "fifolink") == 0);
	CHECK(outside_intact());
}

static void
test_swapped_between_calls(void)
{
	char	*p;
	int	 error;

	setup();
	CHECK(put("d/f", "inside", NULL) == 0);
	/* The sandbox moves the directory away and plants a symlink. */
	CHECK(rename(ws("d"), ws("d.old")) == 0);
	CHECK(symlink("../outside", ws("d")) == 0);
	CHECK(put("d/f", "x", NULL) == EXDEV);
	CHECK(put("d/secret", "x", NULL) == EXDEV);
	CHECK(get("d/secret", &error) == NULL && error == EXDEV);
	CHECK(files_delete(wsfd, "d/secret") == EXDEV);
	CHECK(files_delete(wsfd, "d") == 0);
	CHECK(outside_intact());
	p = slurp(ws("d.old/f"));
	CHECK_STR(p, "inside");
	free(p);
}

/* A chain of nested directories name/d/d/..., made with fds. */
static int
make_chain(const char *name, int levels)
{
	int	fd, next, i;

	if (mkdir(ws(name), 0755) == -1 ||
	    (fd = open(ws(name), O_RDONLY | O_DIRECTORY)) == -1)
		return -1;
	for (i = 0; i < levels; i++) {
		if (mkdirat(fd, "d", 0755) == -1 ||
		    (next = openat(fd, "d", O_RDONLY | O_DIRECTORY)) == -1) {
			close(fd);
			return -1;
		}
		close(fd);
		fd = next;
	}
	close(fd);
	return 0;
}

static void
test_deep_tree(void)
{
	setup();
	/* 200 levels go; 300 are refused cleanly (one fd a level). */
	CHECK(make_chain("deep", 200) == 0);
	CHECK(files_delete(wsfd, "deep") == 0);
	CHECK(count_dir(wsdir) == 0);
	CHECK(make_chain("deeper", 300) == 0);
	CHECK(files_delete(wsfd, "deeper") == ENAMETOOLONG);
	CHECK(outside_intact());
}

/* Without openat2 (old kernel, valgrind 3.19) everything fails closed. */
static void
test_fail_closed(void)
{
	char	*p;
	int	 error;

	setup();
	CHECK(mkdir(ws("d"), 0755) == 0);
	CHECK(put("d/x", "x", NULL) == ENOSYS);
	CHECK(put("y", "x", NULL) == ENOSYS);
	CHECK(get("d", &error) == NULL && error == ENOSYS);
	CHECK(files_delete(wsfd, "d") == ENOSYS);
	CHECK(count_dir(wsdir) == 1 && count_dir(ws("d")) == 0);
	p = get("../outside/secret", &error);
	CHECK(p == NULL && error == EINVAL);
	CHECK(outside_intact());
}

/* The racing sandbox: swaps a real directory and a symlink out, forever. */
struct racer {
	volatile int	stop;
	const char	*a, *b;
	unsigned long	swaps;
};

static void *
racer_main(void *arg)
{
	struct racer	*r = arg;

	while (!r->stop) {
		if (renameat2(AT_FDCWD, r->a, AT_FDCWD, r->b,
		    RENAME_EXCHANGE) == 0)
			r->swaps++;
	}
	return NULL;
}

static void
test_races(void)
{
	struct racer	 r;
	pthread_t	 t;
	char		*p, path[64];
	int		 i, error, ok = 0, refused = 0, bad = 0, leaked = 0;

	setup();
	/* The parent directory flips between real and a symlink out. */
	CHECK(mkdir(ws("race"), 0755) == 0);
	CHECK(symlink("../outside", ws("race.alt")) == 0);
	r.stop = 0;
	r.swaps = 0;
	r.a = xstrdup(ws("race"));
	r.b = xstrdup(ws("race.alt"));
	pthread_create(&t, NULL, racer_main, &r);
	for (i = 0; i < 2000; i++) {
		snprintf(path, sizeof path, "race/f%d", i % 7);
		error = put(path, "x", NULL);
		if (error == 0)
			ok++;
		else if (error == EXDEV || error == ENOENT)
			refused++;
		else
			bad++;
		p = get("race/secret", &error);
		if (p != NULL) {
			leaked++;
			free(p);
		}
		files_delete(wsfd, "race/secret");
		files_delete(wsfd, "race/f3");
	}
	r.stop = 1;
	pthread_join(t, NULL);
	free((char *)r.a);
	free((char *)r.b);
	CHECK(bad == 0 && leaked == 0);
	CHECK(ok > 0 && refused > 0);
	CHECK(r.swaps > 0);
	CHECK(outside_intact());
	CHECK(count_tmp() == 0);

	/* The last component flips between a file and a symlink out. */
	CHECK(put("rf", "mine", NULL) == 0);
	CHECK(symlink("../outside/secret", ws("rf.alt")) == 0);
	r.stop = 0;
	r.swaps = 0;
	r.a = xstrdup(ws("rf"));
	r.b = xstrdup(ws("rf.alt"));
	pthread_create(&t, NULL, racer_main, &r);
	for (i = 0; i < 2000; i++) {
		p = get("rf", &error);
		if (p != NULL && strcmp(p, secret) == 0)
			leaked++;
		free(p);
		if (i % 10 == 0 && put("rf", "mine", NULL) != 0)
			bad++;
	}
	r.stop = 1;
	pthread_join(t, NULL);
	free((char *)r.a);
	free((char *)r.b);
	CHECK(leaked == 0 && bad == 0);
	CHECK(outside_intact());
	CHECK(count_tmp() == 0);
}

/* Make n empty files "fNNNNN" in dir, in a scrambled order. */
static void
make_many(const char *dir, int n)
{
	char	name[32];
	int	dfd, fd, i, k;

	CHECK(mkdir(ws(dir), 0755) == 0);
	if ((dfd = open(ws(dir), O_RDONLY | O_DIRECTORY)) == -1)
		fatal("open %s", dir);
	for (i = 0; i < n; i++) {
		k = (int)(((long)i * 7919) % n);	/* 7919 is prime */
		snprintf(name, sizeof name, "f%05d", k);
		if ((fd = openat(dfd, name, O_WRONLY | O_CREAT, 0644)) == -1)
			fatal("create %s", name);
		close(fd);
	}
	close(dfd);
}

/* A listing's entry count, truncated flag and first and last names. */
static int
listing_shape(const char *listing, int *truncated, char *first, char *last)
{
	struct json_object	*j, *entries, *v;
	int			 n = -1;

	*truncated = -1;
	first[0] = last[0] = '\0';
	if ((j = json_tokener_parse(listing)) == NULL)
		return -1;
	if (json_object_object_get_ex(j, "entries", &entries)) {
		n = (int)json_object_array_length(entries);
		if (n > 0 && json_object_object_get_ex(
		    json_object_array_get_idx(entries, 0), "name", &v))
			snprintf(first, 32, "%s", json_object_get_string(v));
		if (n > 0 && json_object_object_get_ex(
		    json_object_array_get_idx(entries, n - 1), "name", &v))
			snprintf(last, 32, "%s", json_object_get_string(v));
	}
	if (json_object_object_get_ex(j, "truncated", &v))
		*truncated = json_object_get_boolean(v);
	json_object_put(j);
	return n;
}

/*
 * A listing holds at most 10,000 entries, the first by name, and says
 * so; one of exactly 10,000 is whole. 25,000 names pass the point where
 * the kept names are cut back (twice the cap) more than once.
 */
static void
test_list_cap(void)
{
	char	*p, first[32], last[32];
	int	 error, truncated;

	setup();
	make_many("many", 25000);
	p = get("many", &error);
	CHECK(error == 0 && p != NULL);
	CHECK(p != NULL && listing_shape(p, &truncated, first, last) ==
	    10000);
	CHECK(truncated == 1);
	CHECK_STR(first, "f00000");
	CHECK_STR(last, "f09999");
	free(p);

	make_many("exact", 10000);
	p = get("exact", &error);
	CHECK(error == 0 && p != NULL);
	CHECK(p != NULL && listing_shape(p, &truncated, first, last) ==
	    10000);
	CHECK(truncated == 0);
	CHECK_STR(last, "f09999");
	free(p);
	CHECK(outside_intact());
}

struct pipe_io {
	int		 fd;
	const char	*data;	/* to write, or NULL: read into got */
	size_t		 len;
	int		 commit;	/* after data: write a byte to cfd */
	int		 cfd;
	char		*got;
	size_t		 gotlen;
};

/* The other end of a pipe: write data (then commit or not), or read all. */
static void *
pipe_main(void *arg)
{
	struct pipe_io	*io = arg;
	size_t		 off = 0;
	ssize_t		 n;

	if (io->data == NULL) {
		io->got = slurp_fd(io->fd, &io->gotlen);
		close(io->fd);
		return NULL;
	}
	while (off < io->len) {
		if ((n = write(io->fd, io->data + off, io->len - off)) <= 0)
			break;
		off += n;
	}
	close(io->fd);
	if (io->commit && write(io->cfd, "c", 1) != 1)
		fatal("commit");
	close(io->cfd);
	return NULL;
}

/* files_put_stream of len bytes, committed or not; the errno. */
static int
put_stream(const char *path, const char *data, size_t len, int commit,
    off_t max, int *created)
{
	struct pipe_io	 io;
	pthread_t	 t;
	int		 d[2], c[2], error;

	if (pipe(d) == -1 || pipe(c) == -1)
		fatal("pipe");
	memset(&io, 0, sizeof io);
	io.fd = d[1];
	io.data = data;
	io.len = len;
	io.commit = commit;
	io.cfd = c[1];
	pthread_create(&t, NULL, pipe_main, &io);
	error = files_put_stream(wsfd, path, d[0], c[0], max, UID, GID,
	    created);
	close(d[0]);	/* EPIPE for the writer if we stopped early */
	pthread_join(t, NULL);
	close(c[0]);
	return error;
}

/*
 * A streamed put lands whole and only when committed: an end without
 * the commit byte (the client left) or a body over the limit leaves no
 * file and no temporary, and an old file as it was.
 */
static void
test_put_stream(void)
{
	char	*big, *p;
	size_t	 len = 3 * 1024 * 1024 + 17, i;
	int	 created = -1;

	setup();
	big = xmalloc(len);
	for (i = 0; i < len; i++)
		big[i] = (char)('a' + i % 26);
	CHECK(put_stream("dir/big", big, len, 1, len, &created) == 0);
	CHECK(created == 1);
	p = slurp(ws("dir/big"));
	CHECK(p != NULL && strlen(p) == len && memcmp(p, big, len) == 0);
	free(p);
	CHECK(put_stream("dir/big", "new", 3, 1, len, &created) == 0);
	CHECK(created == 0);
	p = slurp(ws("dir/big"));
	CHECK_STR(p, "new");
	free(p);

	/* Cut off: nothing, and the old content stays. */
	CHECK(put_stream("dir/cut", big, len / 2, 0, len, &created) ==
	    ECONNABORTED);
	CHECK(access(ws("dir/cut"), F_OK) == -1 && errno == ENOENT);
	CHECK(put_stream("dir/big", big, len / 2, 0, len, &created) ==
	    ECONNABORTED);
	p = slurp(ws("dir/big"));
	CHECK_STR(p, "new");
	free(p);
	/* Over the limit, committed or not. */
	CHECK(put_stream("dir/over", big, len, 1, len - 1, &created) ==
	    EFBIG);
	CHECK(access(ws("dir/over"), F_OK) == -1 && errno == ENOENT);
	/* An empty body is an empty file. */
	CHECK(put_stream("empty", "", 0, 1, len, &created) == 0);
	p = slurp(ws("empty"));
	CHECK_STR(p, "");
	free(p);
	CHECK(count_tmp() == 0);
	CHECK(outside_intact());
	free(big);
}

/*
 * A worker killed mid-body (SIGKILL, the OOM killer, a fatal exit) runs
 * no cleanup: what it was writing must not stay in the workspace under a
 * temporary name, nor as a partial file.
 */
static void
test_put_stream_killed(void)
{
	char	 buf[4096];
	pid_t	 pid;
	int	 d[2], c[2], status, i;

	setup();
	memset(buf, 'k', sizeof buf);
	if (pipe(d) == -1 || pipe(c) == -1)
		fatal("pipe");
	if ((pid = fork()) == -1)
		fatal("fork");
	if (pid == 0) {
		close(d[1]);
		close(c[1]);
		_exit(files_put_stream(wsfd, "dir/killed", d[0], c[0],
		    1024 * 1024, UID, GID, NULL));
	}
	close(d[0]);
	close(c[0]);
	/* Bytes in, and taken: the worker is copying them to its file. */
	for (i = 0; i < 64; i++)
		if (write(d[1], buf, sizeof buf) != (ssize_t)sizeof buf)
			fatal("write");
	usleep(200 * 1000);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	close(d[1]);
	close(c[1]);
	CHECK(WIFSIGNALED(status));
	CHECK(count_tmp() == 0);
	CHECK(access(ws("dir/killed"), F_OK) == -1 && errno == ENOENT);
	CHECK(outside_intact());
}

/* files_send of path through a pipe: the head and the bytes after it. */
static int
send_path(const char *path, struct files_head *head, char **body,
    size_t *bodylen)
{
	struct pipe_io	 io;
	pthread_t	 t;
	int		 p[2], error;

	if (pipe(p) == -1)
		fatal("pipe");
	memset(&io, 0, sizeof io);
	io.fd = p[0];
	pthread_create(&t, NULL, pipe_main, &io);
	error = files_send(wsfd, path, p[1]);
	close(p[1]);
	pthread_join(t, NULL);
	memset(head, 0, sizeof *head);
	*body = NULL;
	*bodylen = 0;
	if (io.gotlen >= sizeof *head) {
		memcpy(head, io.got, sizeof *head);
		*bodylen = io.gotlen - sizeof *head;
		*body = xmalloc(*bodylen + 1);
		memcpy(*body, io.got + sizeof *head, *bodylen);
		(*body)[*bodylen] = '\0';
	}
	free(io.got);
	return error;
}

/* What a GET's worker sends: a file, a listing, an error; never outside. */
static void
test_send(void)
{
	struct files_head	 head;
	char			*body, *big;
	size_t			 len = 2 * 1024 * 1024 + 5, blen, i;
	int			 fd;

	setup();
	big = xmalloc(len);
	for (i = 0; i < len; i++)
		big[i] = (char)(i * 31);
	if ((fd = open(ws("blob"), O_WRONLY | O_CREAT, 0644)) == -1 ||
	    write(fd, big, len) != (ssize_t)len)
		fatal("blob");
	close(fd);
	CHECK(send_path("blob", &head, &body, &blen) == 0);
	CHECK(head.error == 0 && head.is_dir == 0 &&
	    head.size == (int64_t)len);
	CHECK(blen == len && body != NULL && memcmp(body, big, len) == 0);
	free(body);

	CHECK(send_path("", &head, &body, &blen) == 0);
	CHECK(head.error == 0 && head.is_dir == 1 &&
	    head.size == (int64_t)blen);
	CHECK(body != NULL && strstr(body, "\"name\":\"blob\"") != NULL);
	free(body);

	CHECK(send_path("nope", &head, &body, &blen) == 0);
	CHECK(head.error == ENOENT && blen == 0);
	free(body);
	CHECK(symlink("../outside/secret", ws("out")) == 0);
	CHECK(send_path("out", &head, &body, &blen) == 0);
	CHECK((head.error == EXDEV || head.error == ELOOP) && blen == 0);
	free(body);
	free(big);
	CHECK(outside_intact());
}

int
main(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_files: needs root (chown), skipped\n");
		return 77;
	}
	struct open_how	 how;
	int		 fd, fd_before, fd_after;

	log_init(LOG_LEVEL_WARN);
	RUN(test_check_path);
	RUN(test_api_path);

	memset(&how, 0, sizeof how);
	how.flags = O_PATH | O_CLOEXEC;
	if ((fd = (int)syscall(SYS_openat2, AT_FDCWD, "/", &how,
	    sizeof how)) == -1 && errno == ENOSYS) {
		fprintf(stderr, "test_files: no openat2 here (valgrind?), "
		    "only the fail-closed checks run\n");
		RUN(test_fail_closed);
		close(wsfd);
		nftw(basedir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
		return unit_finish() == 0 ? 77 : 1;
	}
	close(fd);

	/* Every fd files_* opens is closed again: the next free one stays. */
	setup();
	fd_before = dup(0);
	close(fd_before);
	RUN(test_put);
	RUN(test_put_errors);
	RUN(test_get);
	RUN(test_delete);
	RUN(test_symlink_attacks);
	RUN(test_special_files);
	RUN(test_swapped_between_calls);
	RUN(test_races);
	RUN(test_deep_tree);
	RUN(test_list_cap);
	RUN(test_put_stream);
	RUN(test_put_stream_killed);
	RUN(test_send);

	fd_after = dup(0);
	close(fd_after);
	CHECK(fd_after == fd_before);

	close(wsfd);
	nftw(basedir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return unit_finish();
}
