/*
 * Private previews: the preview secret and the tokens signed with it.
 *
 * The secret is preview_secret_file: TOKEN_KEY_LEN random bytes, made at
 * the first start (written to a temporary file, fsync'd, then linked into
 * place, so a crash never leaves a short key and two daemons racing agree
 * on one), mode 0600. A file that others may read, or of the wrong size,
 * is refused at startup: a leaked or truncated key would make every
 * private preview public. The edge asks here whether a sandbox is private
 * and whether a token opens it; it never sees the key.
 */
#include "config.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "control/control_int.h"

static int	secret_create(const char *, const char *, char **);

/*
 * Make a new secret file at path, atomically; 0, or -1 with *cause (what
 * names it in messages).
 */
static int
secret_create(const char *path, const char *what, char **cause)
{
	unsigned char	 key[TOKEN_KEY_LEN];
	char		*tmp;
	int		 fd, rv = -1;

	xasprintf(&tmp, "%s.tmp.%ld", path, (long)getpid());
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd == -1) {
		xasprintf(cause, "%s: cannot create %s: %s", what,
		    tmp, strerror(errno));
		goto out;
	}
	random_bytes(key, sizeof key);
	if (write(fd, key, sizeof key) != (ssize_t)sizeof key ||
	    fsync(fd) == -1) {
		xasprintf(cause, "%s: cannot write %s: %s", what,
		    tmp, strerror(errno));
		close(fd);
		(void)unlink(tmp);
		goto out;
	}
	close(fd);
	/* link, not rename: a file made meanwhile by another one wins. */
	if (link(tmp, path) == -1 && errno != EEXIST) {
		xasprintf(cause, "%s: cannot create %s: %s", what,
		    path, strerror(errno));
		(void)unlink(tmp);
		goto out;
	}
	(void)unlink(tmp);
	log_info("made a new secret\tfile=%s path=%s", what, path);
	rv = 0;
out:
	OPENSSL_cleanse(key, sizeof key);
	free(tmp);
	return (rv);
}

/*
 * Load the TOKEN_KEY_LEN bytes of the secret file at path into key, making
 * it first if it does not exist; what names it in messages, lost what
 * replacing it ends. 0, or -1 with *cause naming the file and the fault.
 */
int
control_secret_load(const char *path, const char *what, const char *lost,
    uint8_t *key, char **cause)
{
	struct stat	 sb;
	ssize_t		 n;
	int		 fd;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1 && errno == ENOENT) {
		if (secret_create(path, what, cause) == -1)
			return (-1);
		fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd == -1) {
		xasprintf(cause, "%s: cannot open %s: %s", what, path,
		    strerror(errno));
		return (-1);
	}
	if (fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode)) {
		xasprintf(cause, "%s: %s is not a regular file", what, path);
		goto fail;
	}
	if ((sb.st_mode & 077) != 0) {
		xasprintf(cause, "%s: %s may be read or written by group or "
		    "others (mode %04o); chmod 600 it", what, path,
		    (unsigned int)(sb.st_mode & 07777));
		goto fail;
	}
	if (sb.st_size != TOKEN_KEY_LEN) {
		xasprintf(cause, "%s: %s holds %lld bytes, not %d; remove it "
		    "to make a new one (this ends %s)", what, path,
		    (long long)sb.st_size, TOKEN_KEY_LEN, lost);
		goto fail;
	}
	n = read(fd, key, TOKEN_KEY_LEN);
	if (n != (ssize_t)TOKEN_KEY_LEN) {
		xasprintf(cause, "%s: cannot read %s: %s", what, path,
		    n == -1 ? strerror(errno) : "short read");
		goto fail;
	}
	close(fd);
	return (0);
fail:
	close(fd);
	return (-1);
}

/*
 * Load preview_secret_file into ctl, making it first if it does not
 * exist. 0, or -1 with *cause naming the file and what is wrong.
 */
int
preview_key_load(struct control *ctl, char **cause)
{
	return (control_secret_load(ctl->cf->preview_secret_file,
	    "preview_secret_file", "every preview token given so far",
	    ctl->preview_key, cause));
}

/*
 * A token for sandbox id valid for ttl_s seconds from now, into out
 * (TOKEN_MAX_LEN + 1 bytes); *expires its expiry (Unix seconds). 0 or -1.
 */
int
preview_token_make(struct control *ctl, const char *id, int64_t ttl_s,
    char *out, size_t size, int64_t *expires)
{
	*expires = time_now_ms() / 1000 + ttl_s;
	if (token_make(ctl->preview_key, sizeof ctl->preview_key, id,
	    *expires, out, size) == 0)
		return (-1);
	return (0);
}

/* 1 if the sandbox is private; 0 if it is public or unknown. */
int
control_preview_private(struct control *ctl, const char *id)
{
	struct sandbox_rt	*rt;

	if ((rt = rt_get(ctl, id)) == NULL)
		return (0);
	return (rt->private);
}

/* 0 if tok opens sandbox id's preview now (*expires set); else -1. */
int
control_preview_verify(struct control *ctl, const char *id,
    const char *tok, size_t len, int64_t *expires)
{
	const char	*why = NULL;

	if (token_verify(ctl->preview_key, sizeof ctl->preview_key, tok, len,
	    id, time_now_ms() / 1000, expires, &why) == 0)
		return (0);
	log_debug("preview token refused: %s\tsandbox=%s", why, id);
	return (-1);
}
