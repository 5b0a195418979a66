/*
 * GET /terminal: an interactive shell on a PTY. After the 101 answer the
 * connection carries frames both ways: type (1 byte), length (4 bytes,
 * big-endian), payload. 0 = data, 1 = resize (cols, rows: u16 BE each;
 * daemon to agentd), 2 = exit (status u32 BE; agentd to daemon, then close).
 * Both directions are bounded: the PTY is not read while PTY_HIGH bytes wait
 * for the socket, the socket is not read while PTY_HIGH bytes wait for the
 * PTY.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "common/common.h"
#include "agentd/agentd.h"

#define PTY_HIGH		(256 * 1024)
#define PTY_EXIT_GRACE_MS	500

extern char **environ;

struct pty_buf {
	char	*buf;
	size_t	 len;
	size_t	 off;
};

struct pty_session {
	int		 master;	/* -1 once at EOF/EIO */
	pid_t		 pid;
	int		 reaped;
	int		 status;
	int64_t		 reaped_ms;
	int		 exit_queued;
	struct pty_buf	 in;		/* frames from the socket, unparsed */
	struct pty_buf	 to_pty;	/* data for the master */
	struct pty_buf	 out;		/* frames for the socket */
};

static void	pty_child(const char *, const char *)
		    SBX_NORETURN;
static void	pty_append(struct pty_buf *, const void *, size_t);
static void	pty_frame(struct pty_session *, int, const void *, size_t);
static void	pty_close_master(struct pty_session *);
static void	pty_queue_exit(struct pty_session *);

static void
pty_append(struct pty_buf *b, const void *p, size_t n)
{
	if (b->off > 0 && b->off == b->len)
		b->off = b->len = 0;
	b->buf = xrealloc(b->buf, b->len + n);
	memcpy(b->buf + b->len, p, n);
	b->len += n;
}

/* Queue one frame for the socket. */
static void
pty_frame(struct pty_session *ps, int type, const void *p, size_t n)
{
	unsigned char	hdr[5];

	hdr[0] = (unsigned char)type;
	hdr[1] = (unsigned char)(n >> 24);
	hdr[2] = (unsigned char)(n >> 16);
	hdr[3] = (unsigned char)(n >> 8);
	hdr[4] = (unsigned char)n;
	pty_append(&ps->out, hdr, sizeof hdr);
	if (n > 0)
		pty_append(&ps->out, p, n);
}

void
pty_queue_raw(struct pty_session *ps, const char *p, size_t n)
{
	pty_append(&ps->out, p, n);
}

/* In the child: the slave as controlling tty and stdio, then the shell. */
static void
pty_child(const char *slave, const char *workdir)
{
	const char	*shell;
	int		 fd;

	setsid();
	if ((fd = open(slave, O_RDWR)) == -1)
		_exit(127);
	/* Opening it after setsid made it ours; say so for other systems. */
	ioctl(fd, TIOCSCTTY, 0);
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
	if (chdir(workdir) == -1)
		dprintf(STDERR_FILENO, "agentd: chdir %s: %s\r\n", workdir,
		    strerror(errno));
	setenv("TERM", "xterm-256color", 1);
	shell = access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
	setenv("SHELL", shell, 1);
	execl(shell, shell, "-l", (char *)NULL);
	dprintf(STDERR_FILENO, "agentd: %s: %s\r\n", shell, strerror(errno));
	_exit(127);
}

/* Open a PTY and start the shell. */
struct pty_session *
pty_start(const char *workdir, int cols, int rows, char **cause)
{
	struct pty_session	*ps;
	struct winsize		 ws;
	char			*slave;
	int			 m;
	pid_t			 pid;

	if ((m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)) == -1) {
		xasprintf(cause, "posix_openpt: %s", strerror(errno));
		return NULL;
	}
	if (grantpt(m) == -1 || unlockpt(m) == -1 ||
	    (slave = ptsname(m)) == NULL) {
		xasprintf(cause, "pty: %s", strerror(errno));
		close(m);
		return NULL;
	}
	slave = xstrdup(slave);
	/*
	 * The first size, set here and not in the child: a resize frame the
	 * parent reads before the child runs must not be undone by it.
	 */
	memset(&ws, 0, sizeof ws);
	ws.ws_col = (unsigned short)cols;
	ws.ws_row = (unsigned short)rows;
	ioctl(m, TIOCSWINSZ, &ws);
	if ((pid = agentd_fork()) == -1) {
		xasprintf(cause, "fork: %s", strerror(errno));
		free(slave);
		close(m);
		return NULL;
	}
	if (pid == 0)
		pty_child(slave, workdir);
	free(slave);
	fcntl(m, F_SETFL, O_NONBLOCK);
	ps = xcalloc(1, sizeof *ps);
	ps->master = m;
	ps->pid = pid;
	log_info("terminal started\tpid=%ld cols=%d rows=%d", (long)pid, cols,
	    rows);
	return ps;
}

void
pty_events(struct pty_session *ps, short *sock_events, int *ptyfd,
    short *pty_ev)
{
	*sock_events = 0;
	/*
	 * ps->in holds at most one partial frame (pty_feed parses eagerly),
	 * so only the PTY's backlog decides whether to read more.
	 */
	if (ps->to_pty.len - ps->to_pty.off < PTY_HIGH && !ps->exit_queued)
		*sock_events |= POLLIN;
	if (ps->out.len > ps->out.off)
		*sock_events |= POLLOUT;
	/* Always notice the daemon going away. */
	*sock_events |= POLLRDHUP;
	*ptyfd = ps->master;
	*pty_ev = 0;
	if (ps->master == -1)
		return;
	if (ps->out.len - ps->out.off < PTY_HIGH)
		*pty_ev |= POLLIN;
	if (ps->to_pty.len > ps->to_pty.off)
		*pty_ev |= POLLOUT;
}

/* Socket readable: take its bytes as frames. */
int
pty_sock_read(struct pty_session *ps, int sock)
{
	char	buf[65536];
	ssize_t	n;

	n = read(sock, buf, sizeof buf);
	if (n == -1)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	if (n == 0)
		return -1;
	return pty_feed(ps, buf, (size_t)n);
}

/* Bytes from the daemon: parse whole frames, keep the partial rest. */
int
pty_feed(struct pty_session *ps, const char *buf, size_t n)
{
	const unsigned char	*p;
	const char		*payload;
	struct winsize		 ws;
	ssize_t			 r;
	size_t			 len;
	int			 type;

	pty_append(&ps->in, buf, n);
	for (;;) {
		r = pty_frame_parse(ps->in.buf + ps->in.off,
		    ps->in.len - ps->in.off, &type, &payload, &len);
		if (r == PTY_FRAME_PARTIAL)
			break;
		if (r < 0) {
			log_warnx("terminal: bad frame type=%d",
			    (unsigned char)ps->in.buf[ps->in.off]);
			return -1;
		}
		p = (const unsigned char *)payload;
		if (type == PTY_FRAME_DATA) {
			if (ps->master != -1 && len > 0)
				pty_append(&ps->to_pty, payload, len);
		} else {
			memset(&ws, 0, sizeof ws);
			ws.ws_col = (unsigned short)((p[0] << 8) | p[1]);
			ws.ws_row = (unsigned short)((p[2] << 8) | p[3]);
			if (ps->master != -1 && ws.ws_col > 0 &&
			    ws.ws_row > 0)
				ioctl(ps->master, TIOCSWINSZ, &ws);
		}
		ps->in.off += (size_t)r;
	}
	/* Keep only the partial frame: in stays under one frame + a read. */
	if (ps->in.off > 0) {
		memmove(ps->in.buf, ps->in.buf + ps->in.off,
		    ps->in.len - ps->in.off);
		ps->in.len -= ps->in.off;
		ps->in.off = 0;
	}
	return 0;
}

/* Socket writable. */
int
pty_sock_write(struct pty_session *ps, int sock)
{
	ssize_t	n;

	while (ps->out.off < ps->out.len) {
		n = send(sock, ps->out.buf + ps->out.off,
		    ps->out.len - ps->out.off, MSG_NOSIGNAL);
		if (n == -1)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		ps->out.off += (size_t)n;
	}
	ps->out.off = ps->out.len = 0;
	return 0;
}

static void
pty_close_master(struct pty_session *ps)
{
	if (ps->master != -1) {
		close(ps->master);
		ps->master = -1;
	}
	ps->to_pty.off = ps->to_pty.len = 0;
}

/* The shell is gone and its output read: the exit frame. */
static void
pty_queue_exit(struct pty_session *ps)
{
	unsigned char	st[4];
	int		code, sig;
	uint32_t	u;

	if (ps->exit_queued || !ps->reaped)
		return;
	pty_close_master(ps);
	exec_status(ps->status, &code, &sig);
	u = (uint32_t)code;
	st[0] = (unsigned char)(u >> 24);
	st[1] = (unsigned char)(u >> 16);
	st[2] = (unsigned char)(u >> 8);
	st[3] = (unsigned char)u;
	pty_frame(ps, PTY_FRAME_EXIT, st, sizeof st);
	ps->exit_queued = 1;
	log_info("terminal ended\tpid=%ld exit_code=%d", (long)ps->pid, code);
}

/* Master ready: read the screen, write the keyboard. */
void
pty_master_event(struct pty_session *ps, short revents)
{
	char	buf[16384];
	ssize_t	n;

	if (ps->master == -1)
		return;
	if (revents & POLLOUT) {
		n = write(ps->master, ps->to_pty.buf + ps->to_pty.off,
		    ps->to_pty.len - ps->to_pty.off);
		if (n > 0) {
			ps->to_pty.off += (size_t)n;
			if (ps->to_pty.off == ps->to_pty.len)
				ps->to_pty.off = ps->to_pty.len = 0;
		}
	}
	if (revents & (POLLIN | POLLHUP | POLLERR)) {
		n = read(ps->master, buf, sizeof buf);
		if (n > 0)
			pty_frame(ps, PTY_FRAME_DATA, buf, (size_t)n);
		else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			/* EIO: every slave fd is closed, the shell is gone. */
			pty_close_master(ps);
			pty_queue_exit(ps);
		}
	}
}

int
pty_reaped(struct pty_session *ps, pid_t pid, int status)
{
	if (ps->reaped || ps->pid != pid)
		return 0;
	ps->reaped = 1;
	ps->status = status;
	ps->reaped_ms = time_mono_ms();
	if (ps->master == -1)
		pty_queue_exit(ps);
	return 1;
}

/* A background job keeps the slave open after the shell exited. */
int
pty_tick(struct pty_session *ps, int64_t now_ms)
{
	if (!ps->reaped || ps->exit_queued)
		return -1;
	if (now_ms >= ps->reaped_ms + PTY_EXIT_GRACE_MS) {
		pty_queue_exit(ps);
		return -1;
	}
	return (int)(ps->reaped_ms + PTY_EXIT_GRACE_MS - now_ms);
}

int
pty_finished(struct pty_session *ps)
{
	return ps->exit_queued && ps->out.off == ps->out.len;
}

int
pty_running(struct pty_session *ps)
{
	return !ps->reaped;
}

void
pty_kill(struct pty_session *ps, int sig)
{
	if (!ps->reaped)
		kill(-ps->pid, sig);
}

/* The session ends: hang up the shell's group, free. */
void
pty_free(struct pty_session *ps)
{
	if (ps == NULL)
		return;
	if (!ps->reaped) {
		kill(-ps->pid, SIGHUP);
		kill(-ps->pid, SIGCONT);
	}
	pty_close_master(ps);
	free(ps->in.buf);
	free(ps->to_pty.buf);
	free(ps->out.buf);
	free(ps);
}
