/*
 * Agent tasks (API.md section 3, docs/tasks.md). agentd owns a task's
 * process; the daemon owns the queue, the store rows and the event log.
 *
 * A task is in memory while it is queued or running (struct task, on
 * ctl->tasks in creation order). One task per sandbox goes past
 * TASK_PHASE_QUEUED at a time: it wakes its sandbox (the preview wake
 * path, so a stopped or paused sandbox starts once however it is asked),
 * is posted to agentd, and its events are relayed from agentd's
 * streaming GET /tasks/<tid>/events into the host log
 * <data_dir>/tasks/<sandbox>/<tid>.ndjson, one line per event:
 *
 *	<id> <event> <data JSON>\n
 *
 * (json-c never writes a raw newline inside a JSON text). The ids are
 * agentd's seq numbers, so a relay resumed after a daemon restart asks
 * for events after the last id in the log. The log is bounded
 * (task_log_max): past it output and agent events are dropped after one
 * status event {"status":"truncated"}; status and exit events are kept.
 *
 * Event streams (SSE) never read agentd: each client tails the host log
 * from an offset, woken when a line is appended, and pauses while its
 * client is over the edge's high mark, so a slow client costs a file
 * offset, not memory. A finished task's log ends with its exit event,
 * after which every stream ends.
 *
 * A task's env goes to agentd and is never stored or logged: the store's
 * spec_json is the request without it, and a queued task's body (with
 * env) lives in memory only. So a task still queued when the daemon
 * stops cannot be run by the next one: it is failed at startup.
 */
#include "config.h"

#include <sys/queue.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <json.h>

#include "control/control_int.h"

#define TASK_READ_CHUNK		(64 * 1024)
#define TASK_LINE_MAX		(8 * 1024 * 1024)
/* Log bytes one follower reads per loop turn (a replay yields between). */
#define TASK_PUMP_MAX		(1024 * 1024)
#define TASK_HEARTBEAT_MS	15000
#define TASK_CANCEL_GRACE_MS	5000
#define TASK_AGENTD_TIMEOUT_MS	60000
#define TASK_RELAY_RETRIES	5
#define TASK_RELAY_RETRY_MS	1000
/* agentd ends a task at its timeout; the daemon's own guard comes later. */
#define TASK_DEADLINE_SLACK_MS	60000
#define TASK_SUMMARY_MAX	(64 * 1024)	/* kept on the task, bytes */
#define TASK_CHANGED_MAX	(1024 * 1024)

/* Where a task in memory is on its way. */
enum task_phase {
	TASK_PHASE_QUEUED,	/* behind another task of its sandbox */
	TASK_PHASE_WAKING,	/* its sandbox is being woken */
	TASK_PHASE_SENDING,	/* POST /tasks to agentd in flight */
	TASK_PHASE_RUNNING,	/* agentd runs it: relaying its events */
	TASK_PHASE_RETRY,	/* the relay broke: asking again soon */
};

struct task {
	TAILQ_ENTRY(task)	 entry;
	struct control		*ctl;
	char			 id[ID_LEN + 1];
	char			 sandbox_id[ID_LEN + 1];
	enum task_phase		 phase;
	char			*agentd_body;	/* with env: memory only */
	struct control_wait	*wait;		/* WAKING */
	struct agent_req	*relay;		/* RUNNING */
	struct event		*retry_ev;	/* RETRY */
	struct event		*deadline_ev;	/* past timeout_s: give up */
	int64_t			 timeout_s;
	int			 retries;
	int			 held;		/* rt_hold +1 made */
	int			 cancel;	/* asked while SENDING */
	int			 log_fd;	/* append, -1 if none */
	uint64_t		 seq;		/* last id in the log */
	uint64_t		 log_size;
	int			 truncated;
};

/* An SSE client tailing one task's log. */
struct task_follower {
	TAILQ_ENTRY(task_follower) entry;
	struct control		*ctl;
	struct http_exchange	*ex;
	char			 sandbox_id[ID_LEN + 1];
	char			 task_id[ID_LEN + 1];
	int			 fd;
	off_t			 off;
	uint64_t		 after;
	int			 blocked;	/* client over its high mark */
	char			*buf;
	size_t			 bufsize;
	struct event		*heartbeat;
	struct event		*kick;		/* pump from the loop */
};

/* An agentd request or a wake made for a task, found again by its ids. */
enum task_call_kind { CALL_POST, CALL_CANCEL, CALL_REVERT, CALL_PROBE };
struct task_call {
	LIST_ENTRY(task_call)	 entry;
	struct control		*ctl;
	enum task_call_kind	 kind;
	struct http_exchange	*ex;		/* the API call to answer */
	char			 sandbox_id[ID_LEN + 1];
	char			 task_id[ID_LEN + 1];
	char			*body;
	struct control_wait	*wait;
};

static struct task *task_find(struct control *, const char *);
static struct task *task_active(struct control *, const char *);
static void	task_dispatch(struct task *);
static void	task_next(struct control *, const char *);
static void	task_woken_cb(const struct control_target *, void *);
static void	task_woken(struct task *, const struct control_target *);
static void	task_posted_cb(int, const char *, size_t, const char *,
		    void *);
static void	task_relay(struct task *);
static void	task_relay_line_cb(const char *, size_t, void *);
static void	task_relay_end_cb(int, const char *, size_t, const char *,
		    void *);
static void	task_retry_cb(evutil_socket_t, short, void *);
static void	task_deadline(struct task *, int64_t);
static void	task_deadline_cb(evutil_socket_t, short, void *);
static int64_t	task_spec_timeout(const char *);
static void	task_probe_cb(int, const char *, size_t, const char *,
		    void *);
static void	task_exit(struct task *, struct json_object *);
static void	task_fail(struct task *, enum task_state, const char *, int);
static void	task_finish(struct task *, enum task_state, int, int,
		    const char *, const char *, const char *, int);
static void	task_free(struct task *);
static int	task_log_open(struct task *);
static void	task_log_event(struct task *, uint64_t, const char *,
		    const char *);
static uint64_t	task_log_tail(struct control *, const char *, const char *,
		    int *);
static int	task_live(struct control *, const char *);
static void	task_notify(struct control *, const char *);
static struct task_call *task_call_new(struct control *, enum task_call_kind,
		    const char *, const char *, struct http_exchange *);
static void	task_call_free(struct task_call *);
static void	task_cancel_cb(int, const char *, size_t, const char *,
		    void *);
static void	task_revert_woken_cb(const struct control_target *, void *);
static void	task_revert_cb(int, const char *, size_t, const char *,
		    void *);
static void	task_reply(struct control *, struct http_exchange *, int,
		    const char *);
static struct json_object *task_json(struct control *,
		    const struct store_task *);
static int	task_visible(struct control *, struct http_exchange *,
		    const char *, const char *, struct store_task *);
static void	follower_pump(struct task_follower *);
static void	follower_end(struct task_follower *);
static void	follower_drain_cb(struct http_exchange *, void *);
static void	follower_gone_cb(struct http_exchange *, void *);
static void	follower_heartbeat_cb(evutil_socket_t, short, void *);
static void	follower_kick_cb(evutil_socket_t, short, void *);
static char	*task_log_path(struct control *, const char *, const char *);
static void	task_timer_add(struct event *, int);

/* The task in memory with this id, or NULL. */
static struct task *
task_find(struct control *ctl, const char *id)
{
	struct task	*t;

	TAILQ_FOREACH(t, &ctl->tasks, entry) {
		if (strcmp(t->id, id) == 0)
			return (t);
	}
	return (NULL);
}

/* The sandbox's task past the queue (waking, sent, running), or NULL. */
static struct task *
task_active(struct control *ctl, const char *sandbox_id)
{
	struct task	*t;

	TAILQ_FOREACH(t, &ctl->tasks, entry) {
		if (strcmp(t->sandbox_id, sandbox_id) == 0 &&
		    t->phase != TASK_PHASE_QUEUED)
			return (t);
	}
	return (NULL);
}

static void
task_timer_add(struct event *ev, int ms)
{
	struct timeval	tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(ev, &tv);
}

/* data_dir/tasks/<sandbox>/<tid>.ndjson, malloc'd. */
static char *
task_log_path(struct control *ctl, const char *sandbox_id, const char *tid)
{
	char	*path;

	xasprintf(&path, "%s/%s/%s.ndjson", ctl->tasks_dir, sandbox_id, tid);
	return (path);
}

/* A call record; freed by its callback or task_free_all. */
static struct task_call *
task_call_new(struct control *ctl, enum task_call_kind kind,
    const char *sandbox_id, const char *tid, struct http_exchange *ex)
{
	struct task_call	*c;

	c = xcalloc(1, sizeof *c);
	c->ctl = ctl;
	c->kind = kind;
	c->ex = ex;
	snprintf(c->sandbox_id, sizeof c->sandbox_id, "%s", sandbox_id);
	snprintf(c->task_id, sizeof c->task_id, "%s", tid);
	LIST_INSERT_HEAD(&ctl->task_calls, c, entry);
	return (c);
}

static void
task_call_free(struct task_call *c)
{
	LIST_REMOVE(c, entry);
	free(c->body);
	free(c);
}

/* Open (creating) the task's log for appending; reads where it ends. */
static int
task_log_open(struct task *t)
{
	struct stat	 st;
	char		*dir, *path;

	dir = control_sandbox_dir(t->ctl, "tasks", t->sandbox_id);
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		log_warn("mkdir %s", dir);
		free(dir);
		return (-1);
	}
	free(dir);
	path = task_log_path(t->ctl, t->sandbox_id, t->id);
	t->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC |
	    O_NOFOLLOW, 0600);
	if (t->log_fd == -1) {
		log_warn("open %s", path);
		free(path);
		return (-1);
	}
	free(path);
	if (fstat(t->log_fd, &st) == 0)
		t->log_size = (uint64_t)st.st_size;
	if (t->log_size > 0)
		t->seq = task_log_tail(t->ctl, t->sandbox_id, t->id,
		    &t->truncated);
	if (t->log_size >= t->ctl->cf->task_log_max)
		t->truncated = 1;
	return (0);
}

/*
 * The last id in a task's log (0 if none), and whether it was cut
 * already: where a relay resumes after a restart, and whether a stream
 * has anything left to send.
 */
static uint64_t
task_log_tail(struct control *ctl, const char *sandbox_id, const char *tid,
    int *truncated)
{
	struct stat	 st;
	char		*path, *buf, *p, *end;
	uint64_t	 last = 0;
	size_t		 want, cap;
	ssize_t		 n;
	off_t		 from;
	int		 fd, found;

	path = task_log_path(ctl, sandbox_id, tid);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(path);
	if (fd == -1)
		return (0);
	if (fstat(fd, &st) == -1 || st.st_size == 0) {
		close(fd);
		return (0);
	}
	cap = (uint64_t)st.st_size < TASK_LINE_MAX ? (size_t)st.st_size :
	    TASK_LINE_MAX;
	/*
	 * The last id alone (an events request, on the loop) needs only the
	 * last line: a small tail first, larger only for a long last line.
	 * The truncated mark may be further back: all of the cap then.
	 */
	want = truncated == NULL && cap > TASK_READ_CHUNK ? TASK_READ_CHUNK :
	    cap;
	for (;;) {
		from = st.st_size - (off_t)want;
		buf = xmalloc(want + 1);
		n = pread(fd, buf, want, from);
		if (n <= 0) {
			free(buf);
			break;
		}
		buf[n] = '\0';
		/* Each complete line starts with its id; the last one counts. */
		found = 0;
		for (p = buf; (end = strchr(p, '\n')) != NULL; p = end + 1) {
			if (p == buf && from != 0)
				continue;	/* may be the tail of a line */
			*end = '\0';
			last = strtoull(p, NULL, 10);
			found = 1;
			if (truncated != NULL && strstr(p,
			    " status {\"status\":\"truncated\"}") != NULL)
				*truncated = 1;
		}
		free(buf);
		if (found || want >= cap)
			break;
		want = want * 2 < cap ? want * 2 : cap;
	}
	close(fd);
	return (last);
}

/*
 * 1 while the task may still log events: in memory, or left running or
 * queued by the last daemon and not picked up yet (before the reconcile).
 */
static int
task_live(struct control *ctl, const char *tid)
{
	struct store_task	row;
	int			live;

	if (task_find(ctl, tid) != NULL)
		return (1);
	if (ctl->reconciled || store_task_get(ctl->store, tid, &row) != 0)
		return (0);
	live = row.state == TASK_QUEUED || row.state == TASK_RUNNING;
	store_task_clear(&row);
	return (live);
}

/*
 * Append one event (data a JSON text) with this id. Output and agent
 * events past the cap are dropped after one truncated status.
 */
static void
task_log_event(struct task *t, uint64_t id, const char *event,
    const char *data)
{
	char	*line;
	int	 len, droppable;

	if (t->log_fd == -1)
		return;
	droppable = strcmp(event, "output") == 0 || strcmp(event, "agent") == 0;
	if (droppable && t->truncated)
		return;
	len = asprintf(&line, "%" PRIu64 " %s %s\n", id, event, data);
	if (len < 0)
		fatalx("%s: out of memory", __func__);
	if (droppable && (len > TASK_LINE_MAX ||
	    t->log_size + (uint64_t)len > t->ctl->cf->task_log_max)) {
		free(line);
		t->truncated = 1;
		len = asprintf(&line, "%" PRIu64 " status "
		    "{\"status\":\"truncated\"}\n", id);
		if (len < 0)
			fatalx("%s: out of memory", __func__);
	}
	if (write(t->log_fd, line, (size_t)len) != len)
		log_warn("task %s: write to its log", t->id);
	else {
		t->log_size += (uint64_t)len;
		t->ctl->task_events_total++;
	}
	free(line);
	if (id > t->seq)
		t->seq = id;
	task_notify(t->ctl, t->id);
}

/* Wake every stream following this task (from the loop). */
static void
task_notify(struct control *ctl, const char *tid)
{
	struct task_follower	*f;

	TAILQ_FOREACH(f, &ctl->followers, entry) {
		if (strcmp(f->task_id, tid) == 0 && !f->blocked)
			event_active(f->kick, EV_TIMEOUT, 0);
	}
}

/* POST /v1/sandboxes/{id}/tasks, the body checked by api.c. */
void
task_create(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id, struct json_object *spec, struct json_object *env)
{
	struct store_task	 row;
	struct task		*t;
	struct json_object	*body, *v;
	const char		*agent;
	char			*agentd_body;
	int			 rv;

	memset(&row, 0, sizeof row);
	id_new(row.id);
	snprintf(row.sandbox_id, sizeof row.sandbox_id, "%s", sandbox_id);
	json_object_object_get_ex(spec, "agent", &v);
	agent = json_object_get_string(v);
	row.agent = (char *)agent;
	row.spec_json = (char *)json_object_to_json_string_ext(spec,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

	/* What agentd gets: the spec, the id, and the env (memory only). */
	body = json_object_new_object();
	json_object_object_add(body, "id", json_object_new_string(row.id));
	json_object_object_add(body, "kind", json_object_new_string(agent));
	json_object_object_foreach(spec, k, val) {
		if (strcmp(k, "agent") != 0)
			json_object_object_add(body, k, json_object_get(val));
	}
	json_object_object_add(body, "env", provider_task_env(ctl,
	    sandbox_id, agent, env));
	json_object_object_add(body, "cwd",
	    json_object_new_string("/workspace"));
	json_object_object_add(body, "checkpoint",
	    json_object_new_boolean(strcmp(agent, "command") != 0));
	agentd_body = xstrdup(json_object_to_json_string_ext(body,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(body);

	row.state = TASK_QUEUED;
	row.exit_code = -1;
	row.created_at = time_now_ms();
	if ((rv = store_task_insert(ctl->store, &row)) != 0) {
		http_exchange_reply_error(ex, rv == STORE_NOTFOUND ? 404 : 500,
		    rv == STORE_NOTFOUND ? "not_found" : "internal",
		    rv == STORE_NOTFOUND ? "no sandbox %s" :
		    "the task could not be stored (sandbox %s)", sandbox_id);
		free(agentd_body);
		return;
	}

	t = xcalloc(1, sizeof *t);
	t->ctl = ctl;
	memcpy(t->id, row.id, sizeof t->id);
	memcpy(t->sandbox_id, row.sandbox_id, sizeof t->sandbox_id);
	t->phase = TASK_PHASE_QUEUED;
	t->agentd_body = agentd_body;
	t->timeout_s = task_spec_timeout(row.spec_json);
	t->log_fd = -1;
	TAILQ_INSERT_TAIL(&ctl->tasks, t, entry);
	log_info("task queued\tid=%s sandbox=%s agent=%s", t->id,
	    t->sandbox_id, agent);
	if (task_log_open(t) == -1) {
		task_fail(t, TASK_FAILED, "the task's event log cannot be "
		    "written on the host", 1);
		task_reply(ctl, ex, 202, row.id);
		return;
	}
	/* Answer first: the dispatch may finish a task that cannot run. */
	task_reply(ctl, ex, 202, row.id);
	if ((t = task_find(ctl, row.id)) != NULL &&
	    task_active(ctl, sandbox_id) == NULL)
		task_dispatch(t);
}

/* Start the oldest queued task of the sandbox, if none is active. */
static void
task_next(struct control *ctl, const char *sandbox_id)
{
	struct task	*t;

	if (task_active(ctl, sandbox_id) != NULL)
		return;
	TAILQ_FOREACH(t, &ctl->tasks, entry) {
		if (strcmp(t->sandbox_id, sandbox_id) == 0) {
			task_dispatch(t);
			return;
		}
	}
}

/*
 * The task's turn: keep the sandbox awake from now on, and wake it (one
 * start however many ask) before agentd gets the task.
 */
static void
task_dispatch(struct task *t)
{
	struct control_target	 tgt;

	t->phase = TASK_PHASE_WAKING;
	/* Loaded first: a hold on a runtime not in memory would be lost. */
	rt_get(t->ctl, t->sandbox_id);
	if (!t->held) {
		rt_hold(t->ctl, t->sandbox_id, 1);
		t->held = 1;
	}
	/*
	 * Not the app's readiness: a task needs agentd, and an agent must
	 * be able to fix a dev server that never comes up.
	 */
	if (control_target_lookup(t->ctl, t->sandbox_id, CONTROL_PORT_RUNNING,
	    &tgt, task_woken_cb, t, &t->wait) == CONTROL_LOOKUP_DONE) {
		t->wait = NULL;
		task_woken(t, &tgt);
	}
}

/* The wake answered. */
static void
task_woken_cb(const struct control_target *tgt, void *arg)
{
	struct task	*t = arg;

	t->wait = NULL;
	task_woken(t, tgt);
}

/* The sandbox runs (or could not): hand the task to agentd. */
static void
task_woken(struct task *t, const struct control_target *tgt)
{
	struct task_call	*c;
	char			 why[256];

	if (tgt->kind != TARGET_OK) {
		snprintf(why, sizeof why, "the sandbox could not be woken: %s",
		    tgt->message != NULL ? tgt->message :
		    tgt->kind == TARGET_UNKNOWN ? "it no longer exists" :
		    "it did not start");
		task_fail(t, TASK_FAILED, why, 1);
		return;
	}
	t->phase = TASK_PHASE_SENDING;
	c = task_call_new(t->ctl, CALL_POST, t->sandbox_id, t->id, NULL);
	agent_request(t->ctl->hub, t->sandbox_id, "POST", "/tasks",
	    t->agentd_body, strlen(t->agentd_body), TASK_AGENTD_TIMEOUT_MS,
	    task_posted_cb, c);
}

/* agentd answered POST /tasks. */
static void
task_posted_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct task_call	*c = arg;
	struct control		*ctl = c->ctl;
	struct task		*t;
	struct json_object	*o, *v;
	char			 why[512], *path;

	t = task_find(ctl, c->task_id);
	task_call_free(c);
	if (t == NULL || t->phase != TASK_PHASE_SENDING)
		return;
	free(t->agentd_body);	/* the env is agentd's now */
	t->agentd_body = NULL;
	if (status != 200 && status != 201) {
		if (status == 0)
			snprintf(why, sizeof why, "the sandbox's agent did "
			    "not take the task: %s", errmsg != NULL ? errmsg :
			    "no answer");
		else if (status == 404 || status == 405)
			snprintf(why, sizeof why, "the sandbox's agent does "
			    "not run tasks (HTTP %d)", status);
		else
			snprintf(why, sizeof why, "the sandbox's agent "
			    "refused the task: HTTP %d %.300s", status,
			    body != NULL ? body : "");
		task_fail(t, TASK_FAILED, why, 1);
		return;
	}
	if ((o = json_tokener_parse(body)) != NULL) {
		if (json_object_object_get_ex(o, "checkpoint", &v) &&
		    json_object_is_type(v, json_type_string))
			store_task_set_checkpoint(ctl->store, t->id,
			    json_object_get_string(v));
		json_object_put(o);
	}
	store_task_set_state(ctl->store, t->id, TASK_RUNNING, -1,
	    time_now_ms());
	log_info("task running\tid=%s sandbox=%s", t->id, t->sandbox_id);
	task_deadline(t, time_now_ms());
	task_relay(t);
	if (t->cancel) {
		c = task_call_new(ctl, CALL_CANCEL, t->sandbox_id, t->id,
		    NULL);
		xasprintf(&c->body, "{\"grace_ms\":%d}", TASK_CANCEL_GRACE_MS);
		xasprintf(&path, "/tasks/%s/cancel", t->id);
		agent_request(ctl->hub, t->sandbox_id, "POST", path, c->body,
		    strlen(c->body), 0, task_cancel_cb, c);
		free(path);
	}
}

/* Follow agentd's events of the task, after the last one logged. */
static void
task_relay(struct task *t)
{
	char	*path;

	t->phase = TASK_PHASE_RUNNING;
	xasprintf(&path, "/tasks/%s/events?after=%" PRIu64, t->id, t->seq);
	t->relay = agent_stream(t->ctl->hub, t->sandbox_id, "GET", path,
	    NULL, 0, TASK_AGENTD_TIMEOUT_MS, task_relay_line_cb,
	    task_relay_end_cb, t);
	free(path);
}

/*
 * One line of agentd's event stream as the host log keeps it (agentd is
 * inside the sandbox: nothing it sends is trusted). 0: *seq, *event (a
 * static name) and *data, a JSON text on one line (malloc'd); for an
 * exit event *exit is the object (the caller puts it), else NULL. 1: a
 * well-formed event of a type not relayed. -1: malformed.
 */
int
task_event_convert(const char *line, size_t len, uint64_t *seq,
    const char **event, char **data, struct json_object **exitp)
{
	static const char *const names[] = { "output", "agent", "status",
	    "exit" };
	struct json_tokener	*tok;
	struct json_object	*o, *v, *d;
	const char		*type;
	size_t			 i, end;
	int64_t			 n;

	*data = NULL;
	*exitp = NULL;
	if (len == 0 || len > INT32_MAX || memchr(line, '\0', len) != NULL)
		return (-1);
	tok = json_tokener_new_ex(32);
	o = json_tokener_parse_ex(tok, line, (int)len);
	end = json_tokener_get_parse_end(tok);
	if (json_tokener_get_error(tok) != json_tokener_success)
		o = (json_object_put(o), NULL);
	json_tokener_free(tok);
	for (; o != NULL && end < len; end++) {
		if (strchr(" \t\r\n", line[end]) == NULL)
			o = (json_object_put(o), NULL);
	}
	if (o == NULL || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "seq", &v) ||
	    !json_object_is_type(v, json_type_int) ||
	    (n = json_object_get_int64(v)) <= 0 || n == INT64_MAX ||
	    !json_object_object_get_ex(o, "type", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		json_object_put(o);
		return (-1);
	}
	*seq = (uint64_t)n;
	type = json_object_get_string(v);
	for (i = 0; i < nitems(names); i++) {
		if (strcmp(type, names[i]) == 0)
			break;
	}
	if (i == nitems(names)) {
		json_object_put(o);
		return (1);
	}
	*event = names[i];
	if (strcmp(*event, "agent") == 0) {
		if (!json_object_object_get_ex(o, "data", &d))
			d = NULL;
		*data = xstrdup(d != NULL ? json_object_to_json_string_ext(d,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) :
		    "null");
		json_object_put(o);
		return (0);
	}
	json_object_object_del(o, "seq");
	json_object_object_del(o, "type");
	/* A timeout says so in the exit event itself. */
	if (strcmp(*event, "exit") == 0 &&
	    !json_object_object_get_ex(o, "error", &v) &&
	    json_object_object_get_ex(o, "timed_out", &v) &&
	    json_object_get_boolean(v))
		json_object_object_add(o, "error",
		    json_object_new_string("the task ran out of time"));
	*data = xstrdup(json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	if (strcmp(*event, "exit") == 0)
		*exitp = o;
	else
		json_object_put(o);
	return (0);
}

/* One event from agentd: into the log; the exit event ends the task. */
static void
task_relay_line_cb(const char *line, size_t len, void *arg)
{
	struct task		*t = arg;
	struct json_object	*exitobj;
	const char		*event;
	char			*data;
	uint64_t		 seq;
	int			 r;

	if (len == 0)
		return;
	if ((r = task_event_convert(line, len, &seq, &event, &data,
	    &exitobj)) == -1) {
		log_warnx("task %s: a malformed event from agentd", t->id);
		return;
	}
	t->retries = 0;
	/* Seen already (a relay resumed from an older point), or not ours. */
	if (r == 1 || seq <= t->seq) {
		free(data);
		json_object_put(exitobj);
		return;
	}
	task_log_event(t, seq, event, data);
	free(data);
	if (exitobj != NULL) {
		task_exit(t, exitobj);
		json_object_put(exitobj);
	}
}

/* The relay ended without an exit event: find out why. */
static void
task_relay_end_cb(int status, const char *body, size_t len,
    const char *errmsg, void *arg)
{
	struct task		*t = arg;
	struct sandbox_rt	*rt;

	t->relay = NULL;
	if (status == 404) {
		task_fail(t, TASK_FAILED, "agentd lost the task", 1);
		return;
	}
	rt = rt_find(t->ctl, t->sandbox_id);
	if (rt == NULL || rt->state != SANDBOX_RUNNING) {
		task_fail(t, TASK_FAILED, "sandbox stopped", 1);
		return;
	}
	if (++t->retries > TASK_RELAY_RETRIES) {
		task_fail(t, TASK_FAILED, "lost contact with the sandbox's "
		    "agent", 1);
		return;
	}
	log_debug("task relay broke, again soon\tid=%s why=%s", t->id,
	    errmsg != NULL ? errmsg : "closed");
	t->phase = TASK_PHASE_RETRY;
	if (t->retry_ev == NULL)
		t->retry_ev = evtimer_new(t->ctl->base, task_retry_cb, t);
	task_timer_add(t->retry_ev, TASK_RELAY_RETRY_MS);
}

static void
task_retry_cb(evutil_socket_t fd, short events, void *arg)
{
	task_relay(arg);
}

/* timeout_s from a stored spec (api.c always sets it); 0 if absent. */
static int64_t
task_spec_timeout(const char *spec_json)
{
	struct json_object	*o, *v;
	int64_t			 n = 0;

	if ((o = json_tokener_parse(spec_json)) == NULL)
		return (0);
	if (json_object_object_get_ex(o, "timeout_s", &v))
		n = json_object_get_int64(v);
	json_object_put(o);
	return (n > 0 ? n : 0);
}

/*
 * agentd (inside the sandbox, so not trusted) ends the task at its
 * timeout. Should it never say so, the daemon gives up a minute later,
 * so that a task cannot keep its sandbox awake for ever.
 */
static void
task_deadline(struct task *t, int64_t started_ms)
{
	int64_t	ms;

	if (t->timeout_s == 0)
		return;
	ms = started_ms + t->timeout_s * 1000 + TASK_DEADLINE_SLACK_MS -
	    time_now_ms();
	if (ms < 1000)
		ms = 1000;
	if (ms > INT32_MAX)
		ms = INT32_MAX;
	if (t->deadline_ev == NULL)
		t->deadline_ev = evtimer_new(t->ctl->base, task_deadline_cb, t);
	task_timer_add(t->deadline_ev, (int)ms);
}

static void
task_deadline_cb(evutil_socket_t fd, short events, void *arg)
{
	struct task		*t = arg;
	struct task_call	*c;
	char			*path;

	/* Best effort: agentd may still be able to stop it. */
	c = task_call_new(t->ctl, CALL_CANCEL, t->sandbox_id, t->id, NULL);
	xasprintf(&c->body, "{\"grace_ms\":0}");
	xasprintf(&path, "/tasks/%s/cancel", t->id);
	agent_request(t->ctl->hub, t->sandbox_id, "POST", path, c->body,
	    strlen(c->body), 0, task_cancel_cb, c);
	free(path);
	task_fail(t, TASK_FAILED, "the sandbox's agent did not end the task "
	    "at its timeout", 1);
}

/* The exit event came: the task is over, as agentd says. */
static void
task_exit(struct task *t, struct json_object *o)
{
	struct json_object	*v;
	enum task_state		 state = TASK_FAILED;
	const char		*error = NULL, *summary = NULL, *changed = NULL;
	char			 errbuf[512];
	int			 code = -1, timed_out = 0;

	if (json_object_object_get_ex(o, "exit_code", &v))
		code = json_object_get_int(v);
	if (json_object_object_get_ex(o, "state", &v) &&
	    store_task_state_parse(json_object_get_string(v), &state) != 0)
		state = TASK_FAILED;
	if (state == TASK_QUEUED || state == TASK_RUNNING)
		state = code == 0 ? TASK_SUCCEEDED : TASK_FAILED;
	if (json_object_object_get_ex(o, "timed_out", &v))
		timed_out = json_object_get_boolean(v);
	if (json_object_object_get_ex(o, "error", &v) &&
	    json_object_is_type(v, json_type_string)) {
		/* agentd is inside the sandbox: what it says is bounded. */
		snprintf(errbuf, sizeof errbuf, "%s", json_object_get_string(v));
		error = errbuf;
	}
	if (json_object_object_get_ex(o, "summary", &v) &&
	    json_object_is_type(v, json_type_object))
		summary = json_object_to_json_string_ext(v,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (summary != NULL && strlen(summary) > TASK_SUMMARY_MAX)
		summary = NULL;
	if (json_object_object_get_ex(o, "changed_files", &v) &&
	    json_object_is_type(v, json_type_array))
		changed = json_object_to_json_string_ext(v,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (changed != NULL && strlen(changed) > TASK_CHANGED_MAX)
		changed = NULL;
	task_finish(t, state, code, timed_out, error, summary, changed, 1);
}

/*
 * The daemon ends a task itself (cancelled before it ran, its sandbox
 * stopped, agentd lost it): an exit event in the log, then finish.
 */
static void
task_fail(struct task *t, enum task_state state, const char *why, int next)
{
	struct json_object	*o;

	o = json_object_new_object();
	json_object_object_add(o, "exit_code", json_object_new_int(-1));
	json_object_object_add(o, "state",
	    json_object_new_string(store_task_state_name(state)));
	json_object_object_add(o, "timed_out", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(why));
	task_log_event(t, t->seq + 1, "exit", json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	log_info("task %s\tid=%s sandbox=%s why=\"%s\"",
	    store_task_state_name(state), t->id, t->sandbox_id, why);
	task_finish(t, state, -1, 0, why, NULL, NULL, next);
}

/*
 * Record the end, let the sandbox's idle clock start, free the task,
 * and (next) start the sandbox's next queued task.
 */
static void
task_finish(struct task *t, enum task_state state, int code, int timed_out,
    const char *error, const char *summary, const char *changed, int next)
{
	struct control	*ctl = t->ctl;
	char		 sid[ID_LEN + 1];

	store_task_finish(ctl->store, t->id, state, code, timed_out, error,
	    summary, changed, time_now_ms());
	if ((size_t)state < nitems(ctl->tasks_finished_total))
		ctl->tasks_finished_total[state]++;
	if (state != TASK_FAILED || error == NULL)
		log_info("task %s\tid=%s sandbox=%s exit_code=%d",
		    store_task_state_name(state), t->id, t->sandbox_id, code);
	memcpy(sid, t->sandbox_id, sizeof sid);
	task_notify(ctl, t->id);
	task_free(t);
	if (next)
		task_next(ctl, sid);
}

/* Unlink and free a task in memory, ending what it waits for. */
static void
task_free(struct task *t)
{
	TAILQ_REMOVE(&t->ctl->tasks, t, entry);
	if (t->wait != NULL)
		control_wait_cancel(t->wait);
	if (t->relay != NULL)
		agent_cancel(t->relay);
	if (t->retry_ev != NULL)
		event_free(t->retry_ev);
	if (t->deadline_ev != NULL)
		event_free(t->deadline_ev);
	if (t->held)
		rt_hold(t->ctl, t->sandbox_id, -1);
	if (t->log_fd != -1)
		close(t->log_fd);
	free(t->agentd_body);
	free(t);
}

/*
 * The sandbox is being stopped, deleted or failed: its tasks cannot go
 * on. Queued ones first, so that ending the active one starts nothing.
 */
void
task_sandbox_state(struct control *ctl, const char *sandbox_id,
    enum sandbox_state to)
{
	struct task	*t, *next;
	const char	*why;

	switch (to) {
	case SANDBOX_STOPPING:
	case SANDBOX_STOPPED:
		why = "sandbox stopped";
		break;
	case SANDBOX_DELETING:
		why = "sandbox deleted";
		break;
	case SANDBOX_ERROR:
		why = "sandbox is in error";
		break;
	default:
		return;
	}
	for (t = TAILQ_FIRST(&ctl->tasks); t != NULL; t = next) {
		next = TAILQ_NEXT(t, entry);
		if (strcmp(t->sandbox_id, sandbox_id) == 0 &&
		    t->phase == TASK_PHASE_QUEUED)
			task_fail(t, TASK_FAILED, why, 0);
	}
	/* A task waking the sandbox sees its start through, or not. */
	if ((t = task_active(ctl, sandbox_id)) != NULL &&
	    t->phase != TASK_PHASE_WAKING)
		task_fail(t, TASK_FAILED, why, 0);
}

/* The sandbox is gone (deleted): end its event streams. */
void
task_sandbox_gone(struct control *ctl, const char *sandbox_id)
{
	struct task		*t, *tn;
	struct task_follower	*f, *fn;

	for (t = TAILQ_FIRST(&ctl->tasks); t != NULL; t = tn) {
		tn = TAILQ_NEXT(t, entry);
		if (strcmp(t->sandbox_id, sandbox_id) == 0)
			task_free(t);
	}
	for (f = TAILQ_FIRST(&ctl->followers); f != NULL; f = fn) {
		fn = TAILQ_NEXT(f, entry);
		if (strcmp(f->sandbox_id, sandbox_id) == 0)
			follower_end(f);
	}
}

/*
 * After the first reconcile: tasks the last daemon left. A running one
 * is picked up again if its sandbox runs and agentd still knows it;
 * else it fails with the reason. A queued one cannot run (its env was
 * never stored): it fails.
 */
void
task_startup(struct control *ctl)
{
	struct store_task	*rows;
	struct sandbox_rt	*rt;
	struct task		*t;
	struct task_call	*c;
	size_t			 n, i;
	char			*path;

	if (store_task_list(ctl->store, NULL, &rows, &n) != 0)
		return;
	for (i = 0; i < n; i++) {
		if (rows[i].state != TASK_RUNNING &&
		    rows[i].state != TASK_QUEUED)
			continue;
		if (task_find(ctl, rows[i].id) != NULL)
			continue;
		t = xcalloc(1, sizeof *t);
		t->ctl = ctl;
		memcpy(t->id, rows[i].id, sizeof t->id);
		memcpy(t->sandbox_id, rows[i].sandbox_id, sizeof t->sandbox_id);
		t->log_fd = -1;
		t->phase = TASK_PHASE_SENDING;	/* not queued: nothing starts */
		TAILQ_INSERT_TAIL(&ctl->tasks, t, entry);
		task_log_open(t);
		if (rows[i].state == TASK_QUEUED) {
			task_fail(t, TASK_FAILED, "the daemon restarted before "
			    "the task began (its env is never stored); "
			    "submit it again", 0);
			continue;
		}
		rt = rt_get(ctl, t->sandbox_id);
		if (rt == NULL || rt->state != SANDBOX_RUNNING ||
		    rt->generation == 0) {
			task_fail(t, TASK_FAILED, "sandbox stopped", 0);
			continue;
		}
		rt_hold(ctl, t->sandbox_id, 1);
		t->held = 1;
		t->timeout_s = task_spec_timeout(rows[i].spec_json);
		task_deadline(t, rows[i].started_at != 0 ? rows[i].started_at :
		    time_now_ms());
		log_info("task picked up again\tid=%s sandbox=%s after=%" PRIu64,
		    t->id, t->sandbox_id, t->seq);
		c = task_call_new(ctl, CALL_PROBE, t->sandbox_id, t->id, NULL);
		xasprintf(&path, "/tasks/%s", t->id);
		agent_request(ctl->hub, t->sandbox_id, "GET", path, NULL, 0,
		    TASK_AGENTD_TIMEOUT_MS, task_probe_cb, c);
		free(path);
	}
	store_task_list_free(rows, n);
}

/* agentd said whether it still knows a task from before the restart. */
static void
task_probe_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct task_call	*c = arg;
	struct task		*t;

	t = task_find(c->ctl, c->task_id);
	task_call_free(c);
	if (t == NULL || t->phase != TASK_PHASE_SENDING)
		return;
	if (status == 200)
		task_relay(t);
	else if (status == 0)
		task_fail(t, TASK_FAILED, "the sandbox's agent did not "
		    "answer after the daemon restarted", 1);
	else
		task_fail(t, TASK_FAILED, "agentd lost the task", 1);
}

/* For /metrics: tasks in memory (queued or running) and event streams. */
void
task_counts(struct control *ctl, int *tasks, int *streams)
{
	struct task		*t;
	struct task_follower	*f;

	*tasks = *streams = 0;
	TAILQ_FOREACH(t, &ctl->tasks, entry)
		(*tasks)++;
	TAILQ_FOREACH(f, &ctl->followers, entry)
		(*streams)++;
}

/* GET /metrics: live tasks by phase, finished ones by state, events. */
void
task_metrics(struct control *ctl, struct evbuffer *out)
{
	static const char *const phases[] = {
		"queued", "waking", "sending", "running", "retry"
	};
	static const enum task_state ends[] = {
		TASK_SUCCEEDED, TASK_FAILED, TASK_CANCELLED
	};
	struct task	*t;
	int		 n[nitems(phases)] = { 0 };
	size_t		 i;

	TAILQ_FOREACH(t, &ctl->tasks, entry) {
		if ((size_t)t->phase < nitems(phases))
			n[t->phase]++;
	}
	evbuffer_add_printf(out, "# HELP sandboxd_tasks Tasks not finished, "
	    "by phase (queued behind another, waking the sandbox, sending to "
	    "agentd, running, retrying the relay).\n"
	    "# TYPE sandboxd_tasks gauge\n");
	for (i = 0; i < nitems(phases); i++)
		evbuffer_add_printf(out, "sandboxd_tasks{phase=\"%s\"} %d\n",
		    phases[i], n[i]);
	evbuffer_add_printf(out, "# HELP sandboxd_tasks_finished_total Tasks "
	    "finished, by their final state.\n"
	    "# TYPE sandboxd_tasks_finished_total counter\n");
	for (i = 0; i < nitems(ends); i++)
		evbuffer_add_printf(out, "sandboxd_tasks_finished_total"
		    "{state=\"%s\"} %llu\n", store_task_state_name(ends[i]),
		    (unsigned long long)ctl->tasks_finished_total[ends[i]]);
	evbuffer_add_printf(out, "# HELP sandboxd_task_events_total Task "
	    "events written to the task logs (output, agent, status, exit).\n"
	    "# TYPE sandboxd_task_events_total counter\n"
	    "sandboxd_task_events_total %llu\n",
	    (unsigned long long)ctl->task_events_total);
}

/* At exit, before the hub and the runtimes go: no callback comes after. */
void
task_free_all(struct control *ctl)
{
	struct task_follower	*f;
	struct task_call	*c;
	struct task		*t;

	while ((f = TAILQ_FIRST(&ctl->followers)) != NULL)
		follower_end(f);
	while ((t = TAILQ_FIRST(&ctl->tasks)) != NULL) {
		/* The runtime is about to go too; no hold to give back. */
		t->held = 0;
		task_free(t);
	}
	while ((c = LIST_FIRST(&ctl->task_calls)) != NULL) {
		if (c->wait != NULL)
			control_wait_cancel(c->wait);
		task_call_free(c);
	}
}

/* A task as the API shows it. */
static struct json_object *
task_json(struct control *ctl, const struct store_task *row)
{
	struct json_object	*o, *spec, *v;
	char			 ts[64];

	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(row->id));
	json_object_object_add(o, "sandbox_id",
	    json_object_new_string(row->sandbox_id));
	json_object_object_add(o, "agent", json_object_new_string(row->agent));
	json_object_object_add(o, "state", json_object_new_string(
	    store_task_state_name(row->state)));
	if ((spec = json_tokener_parse(row->spec_json)) != NULL) {
		json_object_object_foreach(spec, k, val) {
			if (strcmp(k, "agent") == 0)
				continue;
			json_object_object_add(o, k, json_object_get(val));
		}
		json_object_put(spec);
	}
	json_object_object_add(o, "exit_code", row->finished_at != 0 &&
	    row->exit_code >= 0 ? json_object_new_int(row->exit_code) : NULL);
	time_format_rfc3339(row->created_at, ts, sizeof ts);
	json_object_object_add(o, "created_at", json_object_new_string(ts));
	if (row->started_at != 0) {
		time_format_rfc3339(row->started_at, ts, sizeof ts);
		v = json_object_new_string(ts);
	} else
		v = NULL;
	json_object_object_add(o, "started_at", v);
	if (row->finished_at != 0) {
		time_format_rfc3339(row->finished_at, ts, sizeof ts);
		v = json_object_new_string(ts);
	} else
		v = NULL;
	json_object_object_add(o, "finished_at", v);
	json_object_object_add(o, "timed_out",
	    json_object_new_boolean(row->timed_out));
	json_object_object_add(o, "error", row->error != NULL ?
	    json_object_new_string(row->error) : NULL);
	json_object_object_add(o, "summary", row->summary_json != NULL ?
	    json_tokener_parse(row->summary_json) : NULL);
	json_object_object_add(o, "changed_files", row->changed_json != NULL ?
	    json_tokener_parse(row->changed_json) : NULL);
	json_object_object_add(o, "checkpoint", row->checkpoint != NULL ?
	    json_object_new_string(row->checkpoint) : NULL);
	return (o);
}

/* Answer with the task as the store has it now. */
static void
task_reply(struct control *ctl, struct http_exchange *ex, int status,
    const char *tid)
{
	struct store_task	 row;
	struct json_object	*o;

	if (store_task_get(ctl->store, tid, &row) != 0) {
		http_exchange_reply_error(ex, 404, "not_found", "no task %s",
		    tid);
		return;
	}
	o = task_json(ctl, &row);
	store_task_clear(&row);
	http_exchange_reply_json(ex, status, json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

/* Load a task of this sandbox; -1 after answering 404. */
static int
task_visible(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id, const char *tid, struct store_task *row)
{
	int	rv;

	rv = store_task_get(ctl->store, tid, row);
	if (rv == 0 && strcmp(row->sandbox_id, sandbox_id) == 0)
		return (0);
	if (rv == 0)
		store_task_clear(row);
	if (rv == -1)
		http_exchange_reply_error(ex, 500, "internal",
		    "the store could not be read");
	else
		http_exchange_reply_error(ex, 404, "not_found",
		    "no task %s in sandbox %s", tid, sandbox_id);
	return (-1);
}

/* GET /v1/sandboxes/{id}/tasks */
void
task_list(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id)
{
	struct store_task	*rows;
	struct json_object	*o, *arr;
	size_t			 n, i;

	if (store_task_list(ctl->store, sandbox_id, &rows, &n) != 0) {
		http_exchange_reply_error(ex, 500, "internal",
		    "the store could not be read");
		return;
	}
	o = json_object_new_object();
	arr = json_object_new_array();
	for (i = 0; i < n; i++)
		json_object_array_add(arr, task_json(ctl, &rows[i]));
	json_object_object_add(o, "tasks", arr);
	store_task_list_free(rows, n);
	http_exchange_reply_json(ex, 200, json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

/* GET /v1/sandboxes/{id}/tasks/{tid} */
void
task_get(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id, const char *tid)
{
	struct store_task	row;

	if (task_visible(ctl, ex, sandbox_id, tid, &row) == -1)
		return;
	store_task_clear(&row);
	task_reply(ctl, ex, 200, tid);
}

/* POST .../tasks/{tid}/cancel */
void
task_cancel(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id, const char *tid)
{
	struct store_task	 row;
	struct task		*t;
	struct task_call	*c;
	char			*path;

	if (task_visible(ctl, ex, sandbox_id, tid, &row) == -1)
		return;
	store_task_clear(&row);
	if ((t = task_find(ctl, tid)) == NULL) {
		http_exchange_reply_error(ex, 409, "conflict",
		    "task %s has finished already", tid);
		return;
	}
	switch (t->phase) {
	case TASK_PHASE_QUEUED:
	case TASK_PHASE_WAKING:
		/* agentd never saw it: cancelled here and now. */
		task_fail(t, TASK_CANCELLED, "cancelled before it ran", 1);
		task_reply(ctl, ex, 200, tid);
		return;
	case TASK_PHASE_SENDING:
		t->cancel = 1;
		task_reply(ctl, ex, 200, tid);
		return;
	case TASK_PHASE_RUNNING:
	case TASK_PHASE_RETRY:
		break;
	}
	c = task_call_new(ctl, CALL_CANCEL, sandbox_id, tid, ex);
	xasprintf(&c->body, "{\"grace_ms\":%d}", TASK_CANCEL_GRACE_MS);
	xasprintf(&path, "/tasks/%s/cancel", tid);
	agent_request(ctl->hub, sandbox_id, "POST", path, c->body,
	    strlen(c->body), 0, task_cancel_cb, c);
	free(path);
}

/* agentd took the cancel (the exit event follows through the relay). */
static void
task_cancel_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct task_call	*c = arg;
	struct http_exchange	*ex = c->ex;
	struct control		*ctl = c->ctl;
	char			 tid[ID_LEN + 1];

	memcpy(tid, c->task_id, sizeof tid);
	task_call_free(c);
	if (ex == NULL)
		return;
	if (status == 0)
		http_exchange_reply_error(ex, 503, "unavailable",
		    "the sandbox's agent did not answer: %s",
		    errmsg != NULL ? errmsg : "?");
	else
		/* 409 from agentd: it ended meanwhile; the task says how. */
		task_reply(ctl, ex, 200, tid);
}

/* POST .../tasks/{tid}/revert */
void
task_revert(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id, const char *tid)
{
	struct store_task	 row;
	struct control_target	 tgt;
	struct task_call	*c;

	if (task_visible(ctl, ex, sandbox_id, tid, &row) == -1)
		return;
	if (task_find(ctl, tid) != NULL) {
		http_exchange_reply_error(ex, 409, "conflict",
		    "task %s has not finished; cancel it first", tid);
		store_task_clear(&row);
		return;
	}
	if (row.checkpoint == NULL) {
		http_exchange_reply_error(ex, 409, "conflict",
		    "task %s has no checkpoint to revert to (command tasks "
		    "take none)", tid);
		store_task_clear(&row);
		return;
	}
	c = task_call_new(ctl, CALL_REVERT, sandbox_id, tid, ex);
	xasprintf(&c->body, "{\"checkpoint\":\"%s\"}", row.checkpoint);
	store_task_clear(&row);
	if (control_target_lookup(ctl, sandbox_id, CONTROL_PORT_RUNNING, &tgt,
	    task_revert_woken_cb, c, &c->wait) == CONTROL_LOOKUP_DONE) {
		c->wait = NULL;
		task_revert_woken_cb(&tgt, c);
	}
}

/* The sandbox runs for a revert: ask agentd. */
static void
task_revert_woken_cb(const struct control_target *tgt, void *arg)
{
	struct task_call	*c = arg;
	char			*path;

	c->wait = NULL;
	if (tgt->kind != TARGET_OK) {
		http_exchange_reply_error(c->ex, 503, "unavailable",
		    "the sandbox could not be woken: %s", tgt->message != NULL ?
		    tgt->message : "it did not start");
		task_call_free(c);
		return;
	}
	xasprintf(&path, "/tasks/%s/revert", c->task_id);
	agent_request(c->ctl->hub, c->sandbox_id, "POST", path, c->body,
	    strlen(c->body), TASK_AGENTD_TIMEOUT_MS, task_revert_cb, c);
	free(path);
}

static void
task_revert_cb(int status, const char *body, size_t len, const char *errmsg,
    void *arg)
{
	struct task_call	*c = arg;
	struct http_exchange	*ex = c->ex;
	struct control		*ctl = c->ctl;
	char			 tid[ID_LEN + 1];

	memcpy(tid, c->task_id, sizeof tid);
	task_call_free(c);
	if (status == 200)
		task_reply(ctl, ex, 200, tid);
	else if (status == 0)
		http_exchange_reply_error(ex, 503, "unavailable",
		    "the sandbox's agent did not answer: %s",
		    errmsg != NULL ? errmsg : "?");
	else if (status == 404)
		http_exchange_reply_error(ex, 409, "conflict",
		    "the sandbox has no such checkpoint any more");
	else if (status == 409)
		http_exchange_reply_error(ex, 409, "conflict",
		    "the sandbox's agent refused: a task is running");
	else
		http_exchange_reply_error(ex, 500, "internal",
		    "the revert failed: HTTP %d %.300s", status,
		    body != NULL ? body : "");
}

/*
 * GET .../tasks/{tid}/events: replay the host log after `after', then
 * follow it until the exit event.
 */
void
task_events(struct control *ctl, struct http_exchange *ex,
    const char *sandbox_id, const char *tid, uint64_t after)
{
	struct store_task	 row;
	struct task_follower	*f;
	char			*path;
	int			 fd;

	if (task_visible(ctl, ex, sandbox_id, tid, &row) == -1)
		return;
	store_task_clear(&row);
	/*
	 * Nothing past `after' and nothing more to come (a client that saw
	 * the exit event reconnecting): 204, which tells EventSource to
	 * stop reconnecting.
	 */
	if (!task_live(ctl, tid) && task_log_tail(ctl, sandbox_id, tid,
	    NULL) <= after) {
		http_exchange_reply(ex, 204, NULL, NULL, 0);
		return;
	}
	path = task_log_path(ctl, sandbox_id, tid);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(path);
	http_exchange_add_header(ex, "Cache-Control", "no-cache");
	http_exchange_add_header(ex, "X-Accel-Buffering", "no");
	f = xcalloc(1, sizeof *f);
	f->ctl = ctl;
	f->ex = ex;
	f->fd = fd;
	f->after = after;
	snprintf(f->sandbox_id, sizeof f->sandbox_id, "%s", sandbox_id);
	snprintf(f->task_id, sizeof f->task_id, "%s", tid);
	if (http_exchange_stream_begin(ex, 200, "text/event-stream",
	    follower_drain_cb, follower_gone_cb, f) == -1) {
		if (fd != -1)
			close(fd);
		free(f);
		return;
	}
	f->bufsize = TASK_READ_CHUNK;
	f->buf = xmalloc(f->bufsize);
	f->heartbeat = event_new(ctl->base, -1, EV_PERSIST,
	    follower_heartbeat_cb, f);
	f->kick = event_new(ctl->base, -1, 0, follower_kick_cb, f);
	task_timer_add(f->heartbeat, TASK_HEARTBEAT_MS);
	TAILQ_INSERT_TAIL(&ctl->followers, f, entry);
	follower_pump(f);
}

/*
 * Send what the log holds past the follower's offset, until the client
 * is over its high mark (then the drain resumes it), the log's end (an
 * append wakes it), or the exit event (the stream ends).
 */
static void
follower_pump(struct task_follower *f)
{
	char		*line, *nl, *sp, *sp2, *frame;
	size_t		 have, used, budget = TASK_PUMP_MAX;
	ssize_t		 n;
	uint64_t	 id;
	int		 len, r, is_exit;

	while (!f->blocked) {
		if (f->fd == -1)
			break;
		/*
		 * A replay of a long log (a reconnect with a late
		 * Last-Event-ID skips what it saw, HEAD writes nothing)
		 * must not hold the loop for the whole log: go on from the
		 * loop's next turn.
		 */
		if (budget == 0) {
			event_active(f->kick, EV_TIMEOUT, 0);
			return;
		}
		n = pread(f->fd, f->buf, f->bufsize, f->off);
		if (n <= 0)
			break;
		budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
		have = (size_t)n;
		used = 0;
		while (used < have && !f->blocked) {
			line = f->buf + used;
			if ((nl = memchr(line, '\n', have - used)) == NULL)
				break;
			*nl = '\0';
			used = (size_t)(nl - f->buf) + 1;
			f->off += nl - line + 1;
			id = strtoull(line, NULL, 10);
			if ((sp = strchr(line, ' ')) == NULL ||
			    (sp2 = strchr(sp + 1, ' ')) == NULL || id <= f->after)
				continue;
			*sp2 = '\0';
			is_exit = strcmp(sp + 1, "exit") == 0;
			len = asprintf(&frame, "id: %" PRIu64 "\nevent: %s\n"
			    "data: %s\n\n", id, sp + 1, sp2 + 1);
			if (len < 0)
				fatalx("%s: out of memory", __func__);
			r = http_exchange_stream_write(f->ex, frame,
			    (size_t)len);
			free(frame);
			f->after = id;
			if (r == -1)
				return;		/* gone ends it */
			if (is_exit) {
				follower_end(f);
				return;
			}
			if (r == 1)
				f->blocked = 1;
		}
		if (used == 0 && (size_t)n < f->bufsize)
			break;		/* a line still being written */
		if (used == 0) {
			/* One line larger than the buffer: grow it. */
			if (f->bufsize >= TASK_LINE_MAX * 2) {
				f->off += n;	/* cannot be ours: skip it */
				continue;
			}
			f->bufsize *= 2;
			f->buf = xrealloc(f->buf, f->bufsize);
		}
	}
	/* The task is over and its log has no more: nothing will come. */
	if (!f->blocked && !task_live(f->ctl, f->task_id))
		follower_end(f);
}

/* End the stream and free the follower. */
static void
follower_end(struct task_follower *f)
{
	TAILQ_REMOVE(&f->ctl->followers, f, entry);
	if (f->heartbeat != NULL)
		event_free(f->heartbeat);
	if (f->kick != NULL)
		event_free(f->kick);
	if (f->fd != -1)
		close(f->fd);
	free(f->buf);
	if (f->ex != NULL)
		http_exchange_stream_end(f->ex);
	free(f);
}

/* The client took everything: read on. */
static void
follower_drain_cb(struct http_exchange *ex, void *arg)
{
	struct task_follower	*f = arg;

	if (!f->blocked)
		return;
	f->blocked = 0;
	event_active(f->kick, EV_TIMEOUT, 0);
}

/* The client left: the task goes on regardless. */
static void
follower_gone_cb(struct http_exchange *ex, void *arg)
{
	struct task_follower	*f = arg;

	follower_end(f);
}

/* A comment line keeps proxies and clients from timing the stream out. */
static void
follower_heartbeat_cb(evutil_socket_t fd, short events, void *arg)
{
	struct task_follower	*f = arg;

	if (!f->blocked && http_exchange_stream_write(f->ex, ": heartbeat\n\n",
	    13) == 1)
		f->blocked = 1;
}

static void
follower_kick_cb(evutil_socket_t fd, short events, void *arg)
{
	struct task_follower	*f = arg;

	/* A log made after the stream began (the task was just queued). */
	if (f->fd == -1) {
		char	*path = task_log_path(f->ctl, f->sandbox_id,
		    f->task_id);

		f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		free(path);
	}
	follower_pump(f);
}
