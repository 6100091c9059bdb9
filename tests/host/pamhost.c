/*
 * pamhost: a small PAM application for pypam's tests and benchmark.
 *
 * It runs one (or many) PAM transactions against a service file in a private
 * directory (pam_start_confdir, Linux-PAM >= 1.4: no fallback to /etc/pam.d),
 * answers prompts from a script, and prints one JSON report describing what
 * happened.  See the usage text below and tests/support/pamhost.py.
 *
 * Build: gcc -O2 -Wall -Wextra -o build/pamhost tests/host/pamhost.c -lpam -lpthread
 *
 * JSON strings are byte strings: every byte >= 0x80 is written as \u00XX, so
 * the report is plain ASCII and the exact bytes a module sent can be recovered
 * (latin-1 encode, then decode as UTF-8).  Mixing raw UTF-8 with escaped bytes
 * would make the two indistinguishable.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <security/pam_appl.h>

#define MAX_STAGES 32
#define MAX_ITEMS 16
#define MAX_THREADS 256
#define MAX_LOGGED_MESSAGES 256
#define MAX_ANSWER_BYTES (64u * 1024u * 1024u)
#define EXIT_USAGE 2
#define EXIT_INTERNAL 1

/* ------------------------------------------------------------------------ */
/* Small utilities                                                          */

static bool g_quiet;

static void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void diag(const char *fmt, ...)
{
	va_list ap;

	if (g_quiet)
		return;
	va_start(ap, fmt);
	fputs("pamhost: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void wipe_free(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static double now_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0.0;
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Current resident set size in KiB, or -1 (statm's second field, pages). */
static long current_rss_kb(void)
{
	FILE *f = fopen("/proc/self/statm", "re");
	unsigned long size = 0, resident = 0;
	long page = sysconf(_SC_PAGESIZE);
	int n;

	if (f == NULL)
		return -1;
	n = fscanf(f, "%lu %lu", &size, &resident);
	fclose(f);
	if (n != 2 || page <= 0)
		return -1;
	return (long)(resident * (unsigned long)(page / 1024));
}

/*
 * Peak RSS in KiB of this process image.  VmHWM, not getrusage: ru_maxrss
 * survives exec, so a 30 MB Python parent would show up as our peak.
 */
static long peak_rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	long kb = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
		kb = -1;
	}
	fclose(f);
	return kb;
}

/* Number of open fds, so repeated transactions can be checked for fd leaks. */
static int count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] != '.')
			n++;
	}
	closedir(d);
	return n - 1; /* the directory stream's own fd */
}

static bool parse_long(const char *s, long min, long max, long *out)
{
	char *end = NULL;
	long v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static const char *pam_code_name(int rc)
{
	static const char *const names[] = {
		"PAM_SUCCESS", "PAM_OPEN_ERR", "PAM_SYMBOL_ERR", "PAM_SERVICE_ERR",
		"PAM_SYSTEM_ERR", "PAM_BUF_ERR", "PAM_PERM_DENIED", "PAM_AUTH_ERR",
		"PAM_CRED_INSUFFICIENT", "PAM_AUTHINFO_UNAVAIL", "PAM_USER_UNKNOWN",
		"PAM_MAXTRIES", "PAM_NEW_AUTHTOK_REQD", "PAM_ACCT_EXPIRED",
		"PAM_SESSION_ERR", "PAM_CRED_UNAVAIL", "PAM_CRED_EXPIRED",
		"PAM_CRED_ERR", "PAM_NO_MODULE_DATA", "PAM_CONV_ERR",
		"PAM_AUTHTOK_ERR", "PAM_AUTHTOK_RECOVERY_ERR",
		"PAM_AUTHTOK_LOCK_BUSY", "PAM_AUTHTOK_DISABLE_AGING",
		"PAM_TRY_AGAIN", "PAM_IGNORE", "PAM_ABORT", "PAM_AUTHTOK_EXPIRED",
		"PAM_MODULE_UNKNOWN", "PAM_BAD_ITEM", "PAM_CONV_AGAIN",
		"PAM_INCOMPLETE",
	};

	if (rc >= 0 && (size_t)rc < sizeof(names) / sizeof(names[0]))
		return names[rc];
	return "PAM_UNKNOWN_CODE";
}

/* ------------------------------------------------------------------------ */
/* Growable JSON output buffer; an allocation failure is sticky (oom).      */

struct jbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void jb_put(struct jbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (n > SIZE_MAX / 2 - b->len) {
		b->oom = true;
		return;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *np;

		while (cap < b->len + n + 1)
			cap *= 2;
		np = realloc(b->p, cap);
		if (np == NULL) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void jb_raw(struct jbuf *b, const char *s)
{
	jb_put(b, s, strlen(s));
}

static void jb_fmt(struct jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_fmt(struct jbuf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		b->oom = true; /* only short numeric fragments go through here */
		return;
	}
	jb_put(b, tmp, (size_t)n);
}

/* A JSON string (or null) from a C string, see the byte rule at the top. */
static void jb_str(struct jbuf *b, const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	char esc[8];

	if (s == NULL) {
		jb_raw(b, "null");
		return;
	}
	jb_raw(b, "\"");
	for (; *u != '\0'; u++) {
		switch (*u) {
		case '"': jb_raw(b, "\\\""); break;
		case '\\': jb_raw(b, "\\\\"); break;
		case '\n': jb_raw(b, "\\n"); break;
		case '\r': jb_raw(b, "\\r"); break;
		case '\t': jb_raw(b, "\\t"); break;
		default:
			if (*u < 0x20 || *u >= 0x7f) {
				snprintf(esc, sizeof(esc), "\\u%04x", *u);
				jb_raw(b, esc);
			} else {
				jb_put(b, (const char *)u, 1);
			}
		}
	}
	jb_raw(b, "\"");
}

static void jb_key(struct jbuf *b, bool *first, const char *key)
{
	if (!*first)
		jb_raw(b, ",");
	*first = false;
	jb_str(b, key);
	jb_raw(b, ":");
}

static bool write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* ------------------------------------------------------------------------ */
/* Scripted answers                                                         */

struct answers {
	char **v;     /* owned copies, wiped on free */
	size_t count;
};

static bool answers_add(struct answers *a, const char *s, size_t n)
{
	char **nv;
	char *copy;

	if (a->count >= SIZE_MAX / sizeof(char *) - 1)
		return false;
	copy = malloc(n + 1);
	if (copy == NULL)
		return false;
	memcpy(copy, s, n);
	copy[n] = '\0';
	/* The pointer array holds no secrets, so plain realloc is fine here. */
	nv = realloc(a->v, (a->count + 1) * sizeof(char *));
	if (nv == NULL) {
		wipe_free(copy);
		return false;
	}
	a->v = nv;
	a->v[a->count++] = copy;
	return true;
}

static void answers_free(struct answers *a)
{
	for (size_t i = 0; i < a->count; i++)
		wipe_free(a->v[i]);
	free(a->v);
	a->v = NULL;
	a->count = 0;
}

/*
 * Read every answer from fd until EOF.  Records end with sep ('\n' or '\0');
 * a missing final separator is tolerated.  The read buffer is grown by
 * copy-and-wipe rather than realloc so no stale copy of a secret is left in
 * freed heap memory.
 */
static bool answers_read_fd(struct answers *a, int fd, char sep)
{
	size_t cap = 4096, len = 0, start = 0;
	char *buf = malloc(cap);
	bool ok = true;

	if (buf == NULL)
		return false;
	for (;;) {
		ssize_t r;

		if (len == cap) {
			char *nb;

			if (cap >= MAX_ANSWER_BYTES) {
				diag("answers exceed %u bytes", MAX_ANSWER_BYTES);
				ok = false;
				break;
			}
			nb = malloc(cap * 2);
			if (nb == NULL) {
				ok = false;
				break;
			}
			memcpy(nb, buf, len);
			explicit_bzero(buf, cap);
			free(buf);
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			diag("reading answers: %s", strerror(errno));
			ok = false;
			break;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	for (size_t i = 0; ok && i < len; i++) {
		if (buf[i] == sep) {
			ok = answers_add(a, buf + start, i - start);
			start = i + 1;
		}
	}
	if (ok && start < len)
		ok = answers_add(a, buf + start, len - start);
	explicit_bzero(buf, cap);
	free(buf);
	return ok;
}

/* ------------------------------------------------------------------------ */
/* Conversation                                                             */

enum conv_mode {
	CONV_SCRIPT,       /* answer prompts from the script */
	CONV_ERROR,        /* always PAM_CONV_ERR */
	CONV_NULL_RESP,    /* PAM_SUCCESS but *resp == NULL */
	CONV_NULL_ANSWERS, /* PAM_SUCCESS, every resp[i].resp == NULL */
};

struct msg_log {
	int style[MAX_LOGGED_MESSAGES];
	char *text[MAX_LOGGED_MESSAGES];
	size_t count;
	bool truncated;
};

struct conv_state {
	const struct answers *answers;
	size_t next;          /* index of the next scripted answer */
	enum conv_mode mode;
	struct msg_log *log;  /* NULL: do not record (repeat runs) */
	unsigned long calls;
};

static void log_message(struct msg_log *log, const struct pam_message *m)
{
	if (log == NULL)
		return;
	if (log->count >= MAX_LOGGED_MESSAGES) {
		log->truncated = true;
		return;
	}
	log->style[log->count] = m->msg_style;
	/* A failed copy is logged as null text rather than dropped. */
	log->text[log->count] = m->msg != NULL ? strdup(m->msg) : NULL;
	log->count++;
}

static void log_free(struct msg_log *log)
{
	for (size_t i = 0; i < log->count; i++)
		free(log->text[i]);
	log->count = 0;
	log->truncated = false;
}

static void free_responses(struct pam_response *r, int n)
{
	for (int i = 0; i < n; i++)
		wipe_free(r[i].resp);
	free(r);
}

static int conversation(int num_msg, const struct pam_message **msg,
			struct pam_response **resp, void *appdata_ptr)
{
	struct conv_state *cs = appdata_ptr;
	struct pam_response *r;

	if (resp != NULL)
		*resp = NULL;
	if (cs == NULL || msg == NULL || resp == NULL || num_msg <= 0 ||
	    num_msg > PAM_MAX_NUM_MSG)
		return PAM_CONV_ERR;
	cs->calls++;
	for (int i = 0; i < num_msg; i++) {
		if (msg[i] == NULL)
			return PAM_CONV_ERR;
		log_message(cs->log, msg[i]);
	}
	if (cs->mode == CONV_ERROR)
		return PAM_CONV_ERR;
	if (cs->mode == CONV_NULL_RESP)
		return PAM_SUCCESS;

	r = calloc((size_t)num_msg, sizeof(*r));
	if (r == NULL)
		return PAM_BUF_ERR;
	if (cs->mode == CONV_NULL_ANSWERS) {
		*resp = r;
		return PAM_SUCCESS;
	}
	/* Linux-PAM convention: msg[i] points at the i-th message. */
	for (int i = 0; i < num_msg; i++) {
		switch (msg[i]->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
		case PAM_PROMPT_ECHO_ON:
			if (cs->answers == NULL || cs->next >= cs->answers->count) {
				free_responses(r, num_msg);
				return PAM_CONV_ERR;
			}
			/* PAM frees (and its modules wipe) what we hand over. */
			r[i].resp = strdup(cs->answers->v[cs->next]);
			if (r[i].resp == NULL) {
				free_responses(r, num_msg);
				return PAM_BUF_ERR;
			}
			cs->next++;
			break;
		case PAM_ERROR_MSG:
		case PAM_TEXT_INFO:
			break;
		default:
			/* Binary/radio prompts: nothing sensible to answer. */
			free_responses(r, num_msg);
			return PAM_CONV_ERR;
		}
	}
	*resp = r;
	return PAM_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */

enum stage { ST_AUTH, ST_SETCRED, ST_DELCRED, ST_ACCT, ST_OPEN, ST_CLOSE, ST_CHAUTHTOK };

static const char *const stage_names[] = {
	"auth", "setcred", "delcred", "acct", "open", "close", "chauthtok",
};

struct item_spec {
	int type;
	const char *name;
	const char *value;
};

static const struct { const char *name; int type; } item_table[] = {
	{ "user", PAM_USER }, { "tty", PAM_TTY }, { "rhost", PAM_RHOST },
	{ "ruser", PAM_RUSER }, { "user_prompt", PAM_USER_PROMPT },
	{ "xdisplay", PAM_XDISPLAY },
};

struct options {
	const char *confdir, *service, *user;
	enum stage stages[MAX_STAGES];
	size_t nstages;
	struct item_spec items[MAX_ITEMS];
	size_t nitems;
	struct answers answers;
	bool have_answer_args;
	long answers_fd;
	bool answers_nul;
	long repeat, threads, sample_every, expect;
	bool fork_between, child_pam_end;
	long child_timeout_s;
	bool get_env, no_conv, silent, stop_on_fail, report_signals, report_environ;
	const char *exec_after; /* sh -c command run by a fork+exec before pam_end */
	enum conv_mode conv_mode;
	long report_fd;
};

static void usage(FILE *f)
{
	fputs(
"usage: pamhost --confdir DIR --service NAME [options]\n"
"  --user USER              user passed to pam_start (default: none, PAM prompts)\n"
"  --stages LIST            comma list of auth,setcred,delcred,acct,open,close,\n"
"                           chauthtok (default: auth); all run, in order\n"
"  --stop-on-fail           stop at the first stage that does not succeed\n"
"  --answer TEXT            scripted answer (repeatable; visible in ps, avoid for secrets)\n"
"  --answers-fd N           read answers from fd N until EOF, one per line\n"
"  --answers-nul            records on --answers-fd end with NUL, not newline\n"
"  --item NAME=VALUE        pam_set_item before the stages: user, tty, rhost,\n"
"                           ruser, user_prompt, xdisplay\n"
"  --get-env                report pam_getenvlist\n"
"  --no-conv                pam_conv struct whose conv function is NULL\n"
"  --conv-error             conversation always returns PAM_CONV_ERR\n"
"  --conv-null-resp         conversation returns PAM_SUCCESS with *resp NULL\n"
"  --conv-null-answers      conversation returns responses whose resp is NULL\n"
"  --silent                 pass PAM_SILENT to every stage\n"
"  --repeat N               run the whole transaction N times (new handle each)\n"
"  --threads T              T threads each running --repeat transactions\n"
"  --sample-every K         RSS sample every K transactions (default 1000)\n"
"  --expect RC              expected rc of the last stage (default 0)\n"
"  --fork-between           fork after the first auth; child authenticates again\n"
"  --child-timeout S        seconds to wait for that child (default 20)\n"
"  --child-pam-end          the child calls pam_end before exiting\n"
"  --report-fd N            write the JSON report to fd N instead of stdout\n"
"  --report-signals         report signal mask and dispositions before/after\n"
"  --report-environ         report the process environment before/after, in order\n"
"  --exec-after CMD         after the stages (before pam_end) fork and exec\n"
"                           /bin/sh -c CMD, as a login starts the user's session\n"
"  --quiet                  no diagnostics on stderr\n", f);
}

static bool parse_stages(struct options *o, const char *list)
{
	char *copy = strdup(list), *save = NULL, *tok;
	bool ok = true;

	if (copy == NULL)
		return false;
	o->nstages = 0;
	for (tok = strtok_r(copy, ",", &save); tok != NULL && ok;
	     tok = strtok_r(NULL, ",", &save)) {
		size_t i;

		for (i = 0; i < sizeof(stage_names) / sizeof(stage_names[0]); i++)
			if (strcmp(tok, stage_names[i]) == 0)
				break;
		if (i == sizeof(stage_names) / sizeof(stage_names[0])) {
			diag("unknown stage '%s'", tok);
			ok = false;
		} else if (o->nstages >= MAX_STAGES) {
			diag("too many stages");
			ok = false;
		} else {
			o->stages[o->nstages++] = (enum stage)i;
		}
	}
	free(copy);
	return ok;
}

static bool parse_item(struct options *o, const char *spec)
{
	const char *eq = strchr(spec, '=');

	if (eq == NULL || o->nitems >= MAX_ITEMS)
		return false;
	for (size_t i = 0; i < sizeof(item_table) / sizeof(item_table[0]); i++) {
		if (strlen(item_table[i].name) == (size_t)(eq - spec) &&
		    strncmp(spec, item_table[i].name, (size_t)(eq - spec)) == 0) {
			o->items[o->nitems].type = item_table[i].type;
			o->items[o->nitems].name = item_table[i].name;
			o->items[o->nitems].value = eq + 1;
			o->nitems++;
			return true;
		}
	}
	return false;
}

/* Returns 0 on success, EXIT_USAGE on a bad command line. */
static int parse_args(struct options *o, int argc, char **argv)
{
	memset(o, 0, sizeof(*o));
	o->answers_fd = -1;
	o->report_fd = -1;
	o->repeat = 1;
	o->threads = 1;
	o->sample_every = 1000;
	o->child_timeout_s = 20;
	o->stages[0] = ST_AUTH;
	o->nstages = 1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool takes = true;
		bool ok = true;

		if (strcmp(a, "--confdir") == 0) o->confdir = v;
		else if (strcmp(a, "--service") == 0) o->service = v;
		else if (strcmp(a, "--user") == 0) o->user = v;
		else if (strcmp(a, "--stages") == 0) ok = v && parse_stages(o, v);
		else if (strcmp(a, "--item") == 0) ok = v && parse_item(o, v);
		else if (strcmp(a, "--answer") == 0) {
			ok = v && answers_add(&o->answers, v, strlen(v));
			if (ok) /* keep the copy only; shrinks the window in ps */
				explicit_bzero(argv[i + 1], strlen(argv[i + 1]));
			o->have_answer_args = true;
		}
		else if (strcmp(a, "--answers-fd") == 0) ok = parse_long(v, 0, INT_MAX, &o->answers_fd);
		else if (strcmp(a, "--report-fd") == 0) ok = parse_long(v, 0, INT_MAX, &o->report_fd);
		else if (strcmp(a, "--repeat") == 0) ok = parse_long(v, 1, 100000000L, &o->repeat);
		else if (strcmp(a, "--threads") == 0) ok = parse_long(v, 1, MAX_THREADS, &o->threads);
		else if (strcmp(a, "--sample-every") == 0) ok = parse_long(v, 1, 100000000L, &o->sample_every);
		else if (strcmp(a, "--expect") == 0) ok = parse_long(v, 0, 1000, &o->expect);
		else if (strcmp(a, "--child-timeout") == 0) ok = parse_long(v, 1, 3600, &o->child_timeout_s);
		else if (strcmp(a, "--exec-after") == 0) o->exec_after = v;
		else {
			takes = false;
			if (strcmp(a, "--answers-nul") == 0) o->answers_nul = true;
			else if (strcmp(a, "--get-env") == 0) o->get_env = true;
			else if (strcmp(a, "--no-conv") == 0) o->no_conv = true;
			else if (strcmp(a, "--conv-error") == 0) o->conv_mode = CONV_ERROR;
			else if (strcmp(a, "--conv-null-resp") == 0) o->conv_mode = CONV_NULL_RESP;
			else if (strcmp(a, "--conv-null-answers") == 0) o->conv_mode = CONV_NULL_ANSWERS;
			else if (strcmp(a, "--silent") == 0) o->silent = true;
			else if (strcmp(a, "--stop-on-fail") == 0) o->stop_on_fail = true;
			else if (strcmp(a, "--fork-between") == 0) o->fork_between = true;
			else if (strcmp(a, "--child-pam-end") == 0) o->child_pam_end = true;
			else if (strcmp(a, "--quiet") == 0) g_quiet = true;
			else if (strcmp(a, "--report-signals") == 0) o->report_signals = true;
			else if (strcmp(a, "--report-environ") == 0) o->report_environ = true;
			else if (strcmp(a, "--help") == 0) { usage(stdout); exit(0); }
			else {
				diag("unknown option '%s'", a);
				return EXIT_USAGE;
			}
		}
		if (takes) {
			if (v == NULL || !ok) {
				diag("bad or missing value for %s", a);
				return EXIT_USAGE;
			}
			i++;
		}
	}
	if (o->confdir == NULL || o->service == NULL) {
		diag("--confdir and --service are required");
		return EXIT_USAGE;
	}
	if (o->have_answer_args && o->answers_fd >= 0) {
		diag("use either --answer or --answers-fd, not both");
		return EXIT_USAGE;
	}
	if (o->fork_between) {
		bool has_auth = false;

		for (size_t i = 0; i < o->nstages; i++)
			has_auth = has_auth || o->stages[i] == ST_AUTH;
		if (!has_auth || o->repeat != 1 || o->threads != 1) {
			diag("--fork-between needs an auth stage and no --repeat/--threads");
			return EXIT_USAGE;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* One transaction                                                          */

struct stage_result {
	enum stage stage;
	int rc;
};

static const int report_item_types[] = {
	PAM_USER, PAM_AUTHTOK, PAM_SERVICE, PAM_TTY, PAM_RHOST, PAM_RUSER,
	PAM_USER_PROMPT,
};
static const char *const report_item_names[] = {
	"user", "authtok", "service", "tty", "rhost", "ruser", "user_prompt",
};
#define N_REPORT_ITEMS (sizeof(report_item_types) / sizeof(report_item_types[0]))

/* The fork child's outcome, as seen by the parent. */
struct child_report {
	bool ran;          /* a fork was attempted */
	int fork_errno;    /* non-zero: fork or pipe failed */
	pid_t pid;
	bool timeout;
	int status;        /* waitpid status, valid when reaped */
	bool reaped;
	char *json;        /* the child's own JSON fragment, or NULL */
};

/* Everything reported about the first transaction (full detail). */
struct txn_report {
	int start_rc;
	bool started;
	int end_rc;
	int set_item_rc[MAX_ITEMS];
	struct stage_result stages[MAX_STAGES];
	size_t nstages;
	char *item_value[N_REPORT_ITEMS];
	int item_rc[N_REPORT_ITEMS];
	char **env;        /* owned copy of pam_getenvlist, or NULL */
	bool env_read;
	struct msg_log log;
	size_t answers_used;
	unsigned long conv_calls;
	struct child_report child;
	bool exec_after_ran;
	int exec_after_status; /* waitpid status of --exec-after's child */
};

static int run_stage(pam_handle_t *h, enum stage st, int flags)
{
	switch (st) {
	case ST_AUTH: return pam_authenticate(h, flags);
	case ST_SETCRED: return pam_setcred(h, flags | PAM_ESTABLISH_CRED);
	case ST_DELCRED: return pam_setcred(h, flags | PAM_DELETE_CRED);
	case ST_ACCT: return pam_acct_mgmt(h, flags);
	case ST_OPEN: return pam_open_session(h, flags);
	case ST_CLOSE: return pam_close_session(h, flags);
	case ST_CHAUTHTOK: return pam_chauthtok(h, flags);
	}
	return PAM_SYSTEM_ERR;
}

static void jb_messages(struct jbuf *b, const struct msg_log *log)
{
	jb_raw(b, "[");
	for (size_t i = 0; i < log->count; i++) {
		jb_fmt(b, "%s{\"style\":%d,\"text\":", i ? "," : "", log->style[i]);
		jb_str(b, log->text[i]);
		jb_raw(b, "}");
	}
	jb_raw(b, "]");
}

/*
 * Child side of --fork-between: authenticate again on the inherited handle,
 * send a JSON fragment through wfd and _exit (no atexit handlers, no stdio
 * flush of the parent's buffers), the way sshd's PAM child leaves.
 */
static void __attribute__((noreturn))
fork_child(pam_handle_t *h, struct conv_state *cs, int wfd, int flags, bool do_end)
{
	struct msg_log *log = calloc(1, sizeof(*log));
	struct jbuf b = { 0 };
	bool first = true;
	int rc, end_rc = -1;

	cs->log = log;   /* record only what the child is shown */
	cs->next = 0;    /* "auth again": the script starts over */
	rc = pam_authenticate(h, flags);
	if (do_end)
		end_rc = pam_end(h, rc | PAM_DATA_SILENT);
	jb_raw(&b, "{");
	jb_key(&b, &first, "stage"); jb_str(&b, "auth");
	jb_key(&b, &first, "rc"); jb_fmt(&b, "%d", rc);
	jb_key(&b, &first, "name"); jb_str(&b, pam_code_name(rc));
	if (do_end) {
		jb_key(&b, &first, "end"); jb_fmt(&b, "%d", end_rc);
	}
	jb_key(&b, &first, "pid"); jb_fmt(&b, "%ld", (long)getpid());
	if (log != NULL) {
		jb_key(&b, &first, "messages"); jb_messages(&b, log);
	}
	jb_raw(&b, "}");
	if (b.oom || !write_all(wfd, b.p, b.len))
		_exit(EXIT_INTERNAL);
	_exit(0);
}

/* Parent side: collect the child's fragment, bounded by a deadline. */
static void fork_wait(struct child_report *cr, int rfd, long timeout_s)
{
	double deadline = now_ms() + (double)timeout_s * 1000.0;
	struct jbuf b = { 0 };
	bool eof = false;

	while (!cr->reaped) {
		double left = deadline - now_ms();
		struct pollfd p = { .fd = rfd, .events = POLLIN };
		pid_t w;

		if (left <= 0) {
			cr->timeout = true;
			kill(cr->pid, SIGKILL);
			while (waitpid(cr->pid, &cr->status, 0) < 0 && errno == EINTR)
				;
			cr->reaped = true;
			break;
		}
		if (!eof && poll(&p, 1, left > 100 ? 100 : (int)left + 1) > 0) {
			char tmp[4096];
			ssize_t r = read(rfd, tmp, sizeof(tmp));

			if (r > 0)
				jb_put(&b, tmp, (size_t)r);
			else if (r == 0 || errno != EINTR)
				eof = true;
		} else if (eof) {
			struct timespec ts = { 0, 10 * 1000 * 1000 };

			nanosleep(&ts, NULL);
		}
		w = waitpid(cr->pid, &cr->status, WNOHANG);
		if (w == cr->pid)
			cr->reaped = true;
	}
	/*
	 * Drain what the child wrote just before exiting.  Non-blocking: a
	 * grandchild (a module's helper) may still hold the write end open.
	 */
	if (!cr->timeout && fcntl(rfd, F_SETFL, O_NONBLOCK) == 0) {
		for (;;) {
			char tmp[4096];
			ssize_t r = read(rfd, tmp, sizeof(tmp));

			if (r > 0)
				jb_put(&b, tmp, (size_t)r);
			else if (r < 0 && errno == EINTR)
				continue;
			else
				break;
		}
	}
	/* Trust the fragment only from a child that finished cleanly. */
	if (!cr->timeout && !b.oom && b.len > 0 && WIFEXITED(cr->status) &&
	    WEXITSTATUS(cr->status) == 0 && b.p[0] == '{' && b.p[b.len - 1] == '}')
		cr->json = b.p;
	else
		free(b.p);
}

static void fork_between(pam_handle_t *h, struct conv_state *cs,
			 const struct options *o, int flags, struct child_report *cr)
{
	int fds[2];

	cr->ran = true;
	if (pipe2(fds, O_CLOEXEC) != 0) {
		cr->fork_errno = errno;
		return;
	}
	cr->pid = fork();
	if (cr->pid < 0) {
		cr->fork_errno = errno;
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (cr->pid == 0) {
		close(fds[0]);
		fork_child(h, cs, fds[1], flags, o->child_pam_end);
	}
	close(fds[1]);
	fork_wait(cr, fds[0], o->child_timeout_s);
	close(fds[0]);
}

/*
 * --exec-after: what a login does after pam_authenticate, with the handle still
 * open: fork and exec the user's session, which inherits every fd not marked
 * close-on-exec and the environment as it is now.
 */
static void exec_after(const char *cmd, struct txn_report *rep)
{
	pid_t pid = fork();

	rep->exec_after_ran = true;
	rep->exec_after_status = -1;
	if (pid < 0)
		return;
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &rep->exec_after_status, 0) < 0 && errno == EINTR)
		;
}

static void free_env(char **env)
{
	if (env == NULL)
		return;
	for (size_t i = 0; env[i] != NULL; i++)
		wipe_free(env[i]);
	free(env);
}

/*
 * Run start .. stages .. end once.  rep (may be NULL) receives full detail.
 * Returns the rc of the last stage run (or of pam_start if it failed).
 */
static int run_transaction(const struct options *o, struct conv_state *cs,
			   struct txn_report *rep)
{
	struct pam_conv conv = { .conv = o->no_conv ? NULL : conversation,
				 .appdata_ptr = cs };
	pam_handle_t *h = NULL;
	int flags = o->silent ? PAM_SILENT : 0;
	int rc, last;
	bool forked = false;

	cs->next = 0;
	rc = pam_start_confdir(o->service, o->user, &conv, o->confdir, &h);
	if (rep != NULL)
		rep->start_rc = rc;
	if (rc != PAM_SUCCESS)
		return rc; /* libpam already freed and cleared the handle */
	if (rep != NULL)
		rep->started = true;
	last = PAM_SUCCESS;

	for (size_t i = 0; i < o->nitems; i++) {
		int irc = pam_set_item(h, o->items[i].type, o->items[i].value);

		if (rep != NULL)
			rep->set_item_rc[i] = irc;
	}
	for (size_t i = 0; i < o->nstages; i++) {
		last = run_stage(h, o->stages[i], flags);
		if (rep != NULL) {
			rep->stages[rep->nstages].stage = o->stages[i];
			rep->stages[rep->nstages].rc = last;
			rep->nstages++;
		}
		if (o->fork_between && !forked && o->stages[i] == ST_AUTH && rep != NULL) {
			forked = true;
			fork_between(h, cs, o, flags, &rep->child);
		}
		if (o->stop_on_fail && last != PAM_SUCCESS)
			break;
	}
	if (rep != NULL && o->exec_after != NULL)
		exec_after(o->exec_after, rep);
	if (rep != NULL) {
		for (size_t i = 0; i < N_REPORT_ITEMS; i++) {
			const void *v = NULL;

			rep->item_rc[i] = pam_get_item(h, report_item_types[i], &v);
			if (rep->item_rc[i] == PAM_SUCCESS && v != NULL)
				rep->item_value[i] = strdup(v);
		}
		if (o->get_env) {
			/* A malloc'd copy that we own and free later. */
			rep->env = pam_getenvlist(h);
			rep->env_read = true;
		}
		rep->answers_used = cs->next;
		rep->conv_calls = cs->calls;
	}
	rc = pam_end(h, last);
	if (rep != NULL)
		rep->end_rc = rc;
	return last;
}

/* ------------------------------------------------------------------------ */
/* Repeat / threads                                                         */

struct worker {
	const struct options *o;
	struct txn_report *rep;     /* thread 0 only */
	long *rss_samples;          /* thread 0 only */
	size_t nsamples;
	long failures;
	pthread_t tid;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct conv_state cs = {
		.answers = &w->o->answers,
		.mode = w->o->conv_mode,
		.log = w->rep != NULL ? &w->rep->log : NULL,
	};

	for (long n = 1; n <= w->o->repeat; n++) {
		int last = run_transaction(w->o, &cs, n == 1 ? w->rep : NULL);

		if (last != w->o->expect)
			w->failures++;
		if (w->rep != NULL && n == 1)
			cs.log = NULL; /* only the first transaction is logged */
		if (w->rss_samples != NULL &&
		    (n % w->o->sample_every == 0 || n == w->o->repeat))
			w->rss_samples[w->nsamples++] = current_rss_kb();
	}
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Signals (--report-signals): a PAM module must leave them as it found them */

struct sig_snapshot {
	sigset_t mask;
	struct sigaction act[NSIG];
};

static void sig_snapshot(struct sig_snapshot *s)
{
	memset(s, 0, sizeof(*s));
	pthread_sigmask(SIG_SETMASK, NULL, &s->mask);
	for (int sig = 1; sig < NSIG; sig++)
		sigaction(sig, NULL, &s->act[sig]); /* glibc-internal ones stay zeroed */
}

/* {"blocked":[N,...],"handlers":{"N":"ignore|handler flags=0x.."}}, non-default only. */
static void jb_signals(struct jbuf *b, const struct sig_snapshot *s)
{
	bool first = true;

	jb_raw(b, "{\"blocked\":[");
	for (int sig = 1; sig < NSIG; sig++) {
		if (sigismember(&s->mask, sig) == 1) {
			jb_fmt(b, "%s%d", first ? "" : ",", sig);
			first = false;
		}
	}
	jb_raw(b, "],\"handlers\":{");
	first = true;
	for (int sig = 1; sig < NSIG; sig++) {
		const struct sigaction *a = &s->act[sig];
		bool info = (a->sa_flags & SA_SIGINFO) != 0;

		if (!info && a->sa_handler == SIG_DFL)
			continue;
		jb_fmt(b, "%s\"%d\":\"%s flags=%#x\"", first ? "" : ",", sig,
		       !info && a->sa_handler == SIG_IGN ? "ignore" : "handler",
		       (unsigned)a->sa_flags & ~0x04000000u /* SA_RESTORER: libc's */);
		first = false;
	}
	jb_raw(b, "}}");
}

/* ------------------------------------------------------------------------ */
/* Report                                                                   */

static void jb_child(struct jbuf *b, const struct child_report *cr)
{
	bool first = true;

	jb_raw(b, "{");
	if (cr->fork_errno != 0) {
		jb_key(b, &first, "error"); jb_str(b, strerror(cr->fork_errno));
		jb_raw(b, "}");
		return;
	}
	jb_key(b, &first, "pid"); jb_fmt(b, "%ld", (long)cr->pid);
	jb_key(b, &first, "timeout"); jb_raw(b, cr->timeout ? "true" : "false");
	jb_key(b, &first, "exit_status");
	if (cr->reaped && WIFEXITED(cr->status))
		jb_fmt(b, "%d", WEXITSTATUS(cr->status));
	else
		jb_raw(b, "null");
	jb_key(b, &first, "signal");
	if (cr->reaped && WIFSIGNALED(cr->status))
		jb_fmt(b, "%d", WTERMSIG(cr->status));
	else
		jb_raw(b, "null");
	jb_key(b, &first, "result");
	jb_raw(b, cr->json != NULL ? cr->json : "null");
	jb_raw(b, "}");
}

static void jb_env(struct jbuf *b, char **env)
{
	bool first = true;

	if (env == NULL) {
		jb_raw(b, "null");
		return;
	}
	jb_raw(b, "{");
	for (size_t i = 0; env[i] != NULL; i++) {
		char *eq = strchr(env[i], '=');

		if (eq == NULL)
			continue;
		*eq = '\0'; /* temporarily split NAME=VALUE */
		jb_key(b, &first, env[i]);
		jb_str(b, eq + 1);
		*eq = '=';
	}
	jb_raw(b, "}");
}

extern char **environ;

/* A NULL-terminated copy of environ, in order (NULL if out of memory). */
static char **environ_copy(void)
{
	size_t n = 0;
	char **copy;

	while (environ != NULL && environ[n] != NULL)
		n++;
	copy = calloc(n + 1, sizeof(char *));
	for (size_t i = 0; copy != NULL && i < n; i++) {
		copy[i] = strdup(environ[i]);
		if (copy[i] == NULL) {
			free_env(copy);
			return NULL;
		}
	}
	return copy;
}

static void jb_strings(struct jbuf *b, char **v)
{
	if (v == NULL) {
		jb_raw(b, "null");
		return;
	}
	jb_raw(b, "[");
	for (size_t i = 0; v[i] != NULL; i++) {
		if (i)
			jb_raw(b, ",");
		jb_str(b, v[i]);
	}
	jb_raw(b, "]");
}

static void build_report(struct jbuf *b, const struct options *o,
			 const struct txn_report *r, const struct worker *w0,
			 long failures, double elapsed, long rss_start,
			 int fds_before, const struct sig_snapshot *sigs,
			 char **const environs[2])
{
	bool first = true;
	long transactions = o->repeat * o->threads;

	jb_raw(b, "{");
	jb_key(b, &first, "start"); jb_fmt(b, "%d", r->start_rc);
	jb_key(b, &first, "start_name"); jb_str(b, pam_code_name(r->start_rc));
	jb_key(b, &first, "stages"); jb_raw(b, "[");
	for (size_t i = 0; i < r->nstages; i++) {
		jb_raw(b, i ? ",{" : "{");
		jb_raw(b, "\"stage\":"); jb_str(b, stage_names[r->stages[i].stage]);
		jb_fmt(b, ",\"rc\":%d,\"name\":", r->stages[i].rc);
		jb_str(b, pam_code_name(r->stages[i].rc));
		jb_raw(b, "}");
	}
	jb_raw(b, "]");
	jb_key(b, &first, "end");
	if (r->started)
		jb_fmt(b, "%d", r->end_rc);
	else
		jb_raw(b, "null");
	jb_key(b, &first, "set_items"); jb_raw(b, "{");
	for (size_t i = 0; r->started && i < o->nitems; i++) {
		if (i)
			jb_raw(b, ",");
		jb_str(b, o->items[i].name);
		jb_fmt(b, ":%d", r->set_item_rc[i]);
	}
	jb_raw(b, "}");
	jb_key(b, &first, "messages"); jb_messages(b, &r->log);
	jb_key(b, &first, "messages_truncated"); jb_raw(b, r->log.truncated ? "true" : "false");
	jb_key(b, &first, "conv_calls"); jb_fmt(b, "%lu", r->conv_calls);
	jb_key(b, &first, "answers_used"); jb_fmt(b, "%zu", r->answers_used);
	jb_key(b, &first, "answers_given"); jb_fmt(b, "%zu", o->answers.count);
	jb_key(b, &first, "items");
	if (!r->started) {
		jb_raw(b, "null");
	} else {
		bool f2 = true;

		jb_raw(b, "{");
		for (size_t i = 0; i < N_REPORT_ITEMS; i++) {
			jb_key(b, &f2, report_item_names[i]);
			jb_str(b, r->item_value[i]);
		}
		jb_raw(b, "}");
		/* Why an item is null: e.g. PAM_BAD_ITEM for authtok from an app. */
		jb_key(b, &first, "item_rc");
		f2 = true;
		jb_raw(b, "{");
		for (size_t i = 0; i < N_REPORT_ITEMS; i++) {
			jb_key(b, &f2, report_item_names[i]);
			jb_fmt(b, "%d", r->item_rc[i]);
		}
		jb_raw(b, "}");
	}
	if (o->get_env) {
		jb_key(b, &first, "env"); jb_env(b, r->env);
	}
	if (r->child.ran) {
		jb_key(b, &first, "child"); jb_child(b, &r->child);
		jb_key(b, &first, "child_timeout"); jb_raw(b, r->child.timeout ? "true" : "false");
	}
	jb_key(b, &first, "repeat"); jb_fmt(b, "%ld", o->repeat);
	jb_key(b, &first, "threads"); jb_fmt(b, "%ld", o->threads);
	jb_key(b, &first, "transactions"); jb_fmt(b, "%ld", transactions);
	jb_key(b, &first, "expect"); jb_fmt(b, "%ld", o->expect);
	jb_key(b, &first, "failures"); jb_fmt(b, "%ld", failures);
	jb_key(b, &first, "rss_kb_start"); jb_fmt(b, "%ld", rss_start);
	jb_key(b, &first, "rss_sample_every"); jb_fmt(b, "%ld", o->sample_every);
	jb_key(b, &first, "rss_kb_after"); jb_raw(b, "[");
	for (size_t i = 0; i < w0->nsamples; i++)
		jb_fmt(b, "%s%ld", i ? "," : "", w0->rss_samples[i]);
	jb_raw(b, "]");
	jb_key(b, &first, "fds_before"); jb_fmt(b, "%d", fds_before);
	jb_key(b, &first, "fds_after"); jb_fmt(b, "%d", count_open_fds());
	jb_key(b, &first, "pid"); jb_fmt(b, "%ld", (long)getpid());
	if (r->exec_after_ran) {
		jb_key(b, &first, "exec_after_exit");
		if (WIFEXITED(r->exec_after_status))
			jb_fmt(b, "%d", WEXITSTATUS(r->exec_after_status));
		else
			jb_raw(b, "null");
	}
	if (o->report_environ) {
		jb_key(b, &first, "environ_before"); jb_strings(b, environs[0]);
		jb_key(b, &first, "environ_after"); jb_strings(b, environs[1]);
	}
	if (o->report_signals) {
		jb_key(b, &first, "signals_before"); jb_signals(b, &sigs[0]);
		jb_key(b, &first, "signals_after"); jb_signals(b, &sigs[1]);
	}
	jb_key(b, &first, "maxrss_kb"); jb_fmt(b, "%ld", peak_rss_kb());
	jb_key(b, &first, "elapsed_ms"); jb_fmt(b, "%.3f", elapsed);
	jb_key(b, &first, "per_txn_ms"); jb_fmt(b, "%.6f", elapsed / (double)transactions);
	jb_raw(b, "}\n");
}

static void free_report(struct txn_report *r)
{
	for (size_t i = 0; i < N_REPORT_ITEMS; i++)
		free(r->item_value[i]);
	free_env(r->env);
	log_free(&r->log);
	free(r->child.json);
}

int main(int argc, char **argv)
{
	static struct options o; /* large; keep it off the stack */
	static struct txn_report rep;
	static struct sig_snapshot sigs[2];
	char **environs[2] = { NULL, NULL };
	struct worker *workers = NULL;
	struct jbuf out = { 0 };
	long failures = 0, rss_start;
	int fds_before, rc, status = EXIT_INTERNAL, out_fd;
	double t0, elapsed;

	rc = parse_args(&o, argc, argv);
	if (rc != 0) {
		diag("see --help");
		answers_free(&o.answers);
		return rc;
	}
	if (o.answers_fd >= 0 &&
	    !answers_read_fd(&o.answers, (int)o.answers_fd, o.answers_nul ? '\0' : '\n')) {
		diag("could not read answers from fd %ld", o.answers_fd);
		answers_free(&o.answers);
		return EXIT_INTERNAL;
	}
	/* Modules must not inherit the answers; keep 0..2 so nothing reuses them. */
	if (o.answers_fd > 2)
		close((int)o.answers_fd);
	/* Helpers spawned by modules must not hold the report pipe open. */
	if (o.report_fd >= 0 && fcntl((int)o.report_fd, F_SETFD, FD_CLOEXEC) != 0) {
		diag("bad --report-fd %ld: %s", o.report_fd, strerror(errno));
		answers_free(&o.answers);
		return EXIT_USAGE;
	}

	workers = calloc((size_t)o.threads, sizeof(*workers));
	if (workers == NULL)
		goto out;
	workers[0].rss_samples = calloc((size_t)(o.repeat / o.sample_every + 2), sizeof(long));
	if (workers[0].rss_samples == NULL)
		goto out;
	workers[0].rep = &rep;

	fds_before = count_open_fds();
	rss_start = current_rss_kb();
	sig_snapshot(&sigs[0]);
	if (o.report_environ)
		environs[0] = environ_copy();
	t0 = now_ms();
	if (o.threads == 1) {
		workers[0].o = &o;
		worker_main(&workers[0]);
	} else {
		long started = 0;

		for (long t = 0; t < o.threads; t++) {
			workers[t].o = &o;
			if (pthread_create(&workers[t].tid, NULL, worker_main, &workers[t]) != 0) {
				diag("pthread_create failed");
				/* Count transactions that never ran as failures. */
				failures += o.repeat * (o.threads - t);
				break;
			}
			started++;
		}
		for (long t = 0; t < started; t++)
			pthread_join(workers[t].tid, NULL);
	}
	elapsed = now_ms() - t0;
	sig_snapshot(&sigs[1]);
	if (o.report_environ)
		environs[1] = environ_copy();
	for (long t = 0; t < o.threads; t++)
		failures += workers[t].failures;
	if (rep.child.ran) {
		/* A hung or mismatching fork child is a failure too. */
		if (rep.child.json == NULL || rep.child.timeout)
			failures++;
		/* The child's fragment is ours: its first "rc" is the auth rc. */
		else if (strstr(rep.child.json, "\"rc\":") == NULL ||
			 atoi(strstr(rep.child.json, "\"rc\":") + 5) != o.expect)
			failures++;
	}

	build_report(&out, &o, &rep, &workers[0], failures, elapsed, rss_start, fds_before, sigs,
		     environs);
	if (out.oom) {
		diag("out of memory building the report");
		goto out;
	}
	out_fd = o.report_fd >= 0 ? (int)o.report_fd : STDOUT_FILENO;
	if (!write_all(out_fd, out.p, out.len)) {
		diag("writing the report: %s", strerror(errno));
		goto out;
	}
	status = 0;
out:
	free(out.p);
	if (workers != NULL)
		free(workers[0].rss_samples);
	free(workers);
	free_report(&rep);
	free_env(environs[0]);
	free_env(environs[1]);
	answers_free(&o.answers);
	return status;
}
