/*
 * libFuzzer target: how a files URL becomes a path in the workspace
 * (control/files.c). The input is what follows /v1/sandboxes/{id}/files/
 * in the request, still %-encoded: files_api_path decodes and checks it
 * as the API does, then files_get looks it up for real beneath a scratch
 * workspace that holds the symlinks a sandbox could plant ("up" -> "..",
 * "abs" -> the directory outside, "loop" -> itself, "in" -> a file
 * inside).
 *
 * Invariants: an accepted path never starts with '/', holds no "." or
 * ".." component, no empty one, no control character, and no more than
 * 4095 bytes; and whatever files_get opens or lists lies inside the
 * workspace: never the file planted beside it, never a listing of the
 * directory that holds the workspace.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json.h>

#include "common/common.h"
#include "control/control.h"
#include "tests/fuzz/fuzz.h"

#define FUZZ_WS_SECRET	"outside-secret"

static int	 fuzz_wsfd = -1;
static ino_t	 fuzz_secret_ino;
static char	 fuzz_ws_top[] = "/tmp/sbx-fuzz-ws.XXXXXX";

static void	fuzz_ws_init(void);
static void	fuzz_ws_cleanup(void);
static void	fuzz_ws_check(const char *);

static void
fuzz_ws_cleanup(void)
{
	fuzz_rm_tree(fuzz_ws_top);
}

/* top/ws is the workspace; top/outside-secret must stay out of reach. */
static void
fuzz_ws_init(void)
{
	char		*top = fuzz_ws_top, buf[256];
	struct stat	 st;
	int		 fd, cwd;

	log_init(LOG_LEVEL_WARN);
	/* Back where we were at the end: libFuzzer reads relative paths. */
	FUZZ_ASSERT((cwd = open(".", O_PATH | O_DIRECTORY)) != -1);
	FUZZ_ASSERT(mkdtemp(top) != NULL);
	atexit(fuzz_ws_cleanup);
	snprintf(buf, sizeof buf, "%s/" FUZZ_WS_SECRET, top);
	FUZZ_ASSERT((fd = open(buf, O_CREAT | O_WRONLY, 0600)) != -1);
	FUZZ_ASSERT(write(fd, "secret\n", 7) == 7 && fstat(fd, &st) == 0);
	fuzz_secret_ino = st.st_ino;
	close(fd);
	snprintf(buf, sizeof buf, "%s/ws", top);
	FUZZ_ASSERT(mkdir(buf, 0755) == 0);
	FUZZ_ASSERT(chdir(buf) == 0);
	FUZZ_ASSERT(mkdir("src", 0755) == 0);
	FUZZ_ASSERT((fd = open("src/main.c", O_CREAT | O_WRONLY, 0644)) != -1);
	close(fd);
	FUZZ_ASSERT(mkfifo("fifo", 0644) == 0);
	FUZZ_ASSERT(symlink("..", "up") == 0);
	FUZZ_ASSERT(symlink(top, "abs") == 0);
	snprintf(buf, sizeof buf, "../" FUZZ_WS_SECRET);
	FUZZ_ASSERT(symlink(buf, "src/secret") == 0);
	FUZZ_ASSERT(symlink("loop", "loop") == 0);
	FUZZ_ASSERT(symlink("src/main.c", "in") == 0);
	FUZZ_ASSERT((fuzz_wsfd = open(".", O_PATH | O_DIRECTORY)) != -1);
	FUZZ_ASSERT(fchdir(cwd) == 0);
	close(cwd);
}

/* What files_api_path accepts stays a relative, clean path. */
static void
fuzz_ws_check(const char *path)
{
	const char	*p, *start;
	size_t		 n, len = strlen(path);

	FUZZ_ASSERT(len <= 4095);
	if (len == 0)
		return;
	FUZZ_ASSERT(path[0] != '/');
	for (p = path; *p != '\0'; p++)
		FUZZ_ASSERT((unsigned char)*p >= 0x20 && *p != 0x7f);
	for (start = path;; start = p + 1) {
		p = strchr(start, '/');
		n = p != NULL ? (size_t)(p - start) : strlen(start);
		FUZZ_ASSERT(n > 0 && n <= 255);
		FUZZ_ASSERT(!(n == 1 && start[0] == '.'));
		FUZZ_ASSERT(!(n == 2 && start[0] == '.' && start[1] == '.'));
		if (p == NULL)
			break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object	*o, *entries, *e, *name;
	struct stat		 st;
	const char		*why;
	char			*rest, *path, *listing;
	off_t			 fsize;
	size_t			 i;
	int			 fd, r;

	if (fuzz_wsfd == -1)
		fuzz_ws_init();
	/* Exactly sized: the decoder must not read past len. */
	rest = malloc(size > 0 ? size : 1);
	memcpy(rest, data, size);
	r = files_api_path(rest, size, &path, &why);
	free(rest);
	if (r != 0) {
		FUZZ_ASSERT(r == EINVAL && path == NULL && why != NULL);
		return 0;
	}
	FUZZ_ASSERT(path != NULL);
	fuzz_ws_check(path);

	r = files_get(fuzz_wsfd, path, &fd, &fsize, &listing);
	if (r == 0 && fd != -1) {
		FUZZ_ASSERT(fstat(fd, &st) == 0 && S_ISREG(st.st_mode));
		FUZZ_ASSERT(st.st_ino != fuzz_secret_ino);
		close(fd);
	} else if (r == 0) {
		/* A listing: of the workspace or a directory in it. */
		FUZZ_ASSERT(listing != NULL);
		o = json_tokener_parse(listing);
		FUZZ_ASSERT(o != NULL &&
		    json_object_object_get_ex(o, "entries", &entries));
		for (i = 0; i < json_object_array_length(entries); i++) {
			e = json_object_array_get_idx(entries, i);
			FUZZ_ASSERT(json_object_object_get_ex(e, "name",
			    &name));
			FUZZ_ASSERT(strcmp(json_object_get_string(name),
			    FUZZ_WS_SECRET) != 0);
			FUZZ_ASSERT(strcmp(json_object_get_string(name),
			    "ws") != 0);
		}
		json_object_put(o);
		free(listing);
	} else
		FUZZ_ASSERT(listing == NULL);
	free(path);
	return 0;
}
