/*
 * wrap.c: a test-only LD_PRELOAD library that makes the N-th call of one libc or libpam
 * function fail, in the style of pam-u2f's fuzz/wrap.c. Used by tests/test_faults.py
 * through the real PAM host (build/pamhost), never installed.
 *
 *   PYPAM_FAULT=name:N      fail the N-th counted call of `name` (1-based); unset: none
 *   PYPAM_FAULT_COUNTS=path at exit, write "name calls" lines to path (the test counts
 *                           a clean run first, then fails each call in turn); when the
 *                           fault is injected, write "fired NAME PHASE SYMBOL OBJECT"
 *                           to path.fired at once: PHASE is python-init inside CPython's
 *                           start-up, else login; SYMBOL and OBJECT name the caller (the
 *                           nearest exported symbol before it, and its library)
 *
 * What is counted: calls made while the host is inside a PAM call that runs modules
 * (pam_authenticate, pam_setcred, pam_acct_mgmt, pam_open_session, pam_close_session,
 * pam_chauthtok, pam_end), from any code except the host's own executable: libpam, the
 * shim, the embedded interpreter, the TSS libraries, libc on their behalf, and the
 * host's conversation function when it goes through libc (the application failing).
 * Outside that window nothing is counted or failed, so the host can always read its
 * answers and write its report.
 *
 * The conversation is faulted by handing out, from pam_get_item(PAM_CONV), a pam_conv
 * whose function fails its N-th call with PAM_CONV_ERR and otherwise calls the host's.
 *
 * Build (make build): gcc -shared -fPIC -O2 -Wall -Wextra -I<Python include dir>
 *     -o build/faultwrap.so tests/faults/wrap.c -ldl
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <Python.h>
#include <security/pam_appl.h>
#include <security/pam_modules.h>

/* Every function we can fail, in one table: the index is its counter. */
#define FUNCS(X) \
	X(malloc) X(calloc) X(realloc) X(open) X(open64) X(openat) X(openat64) \
	X(read) X(write) X(socket) X(connect) X(poll) X(getpwnam_r) X(getpwuid_r) \
	X(getrandom) X(pam_get_item) X(pam_set_item) X(pam_get_user) X(pam_get_authtok) \
	X(pam_set_data) X(pam_get_data) X(pam_getenv) X(pam_putenv) X(conv)

enum {
#define ENUM(name) F_##name,
	FUNCS(ENUM)
#undef ENUM
	F_COUNT
};

static const char *const names[F_COUNT] = {
#define NAME(name) #name,
	FUNCS(NAME)
#undef NAME
};

/* The call counters, shared with forked children (MAP_SHARED, set up by wrap_init): the
 * PAM modules do their TPM work in a forked child (pinutil/deadline.py), whose calls
 * are part of the login and must be counted, and failed, in one sequence. */
static unsigned long calls_before_init[F_COUNT];
static unsigned long *calls = calls_before_init;
static int fault_func = -1;
static unsigned long fault_n;
static int fired = -1;
static int fired_in_python_init;
static int in_python_init; /* > 0 inside Py_InitializeFromConfig (CPython's start-up) */
static int window; /* > 0 while the host is inside a module-running PAM call */
static uintptr_t host_lo, host_hi; /* the host executable's mapped range */

/* "fired NAME [python-init]" in PYPAM_FAULT_COUNTS.fired, written when the fault is
 * injected (the process may not live to run the destructor). Raw system calls: our
 * own wrappers must not count or fail here. */
static void note_fired(const void *caller)
{
	const char *path = getenv("PYPAM_FAULT_COUNTS");
	char name[4096], line[4200];
	Dl_info info;
	int known = dladdr(caller, &info);
	const char *object = known && info.dli_fname != NULL ? info.dli_fname : "?";
	const char *symbol = known && info.dli_sname != NULL ? info.dli_sname : "?";
	if (path == NULL || snprintf(name, sizeof name, "%s.fired", path) >= (int)sizeof name)
		return;
	int fd = (int)syscall(SYS_openat, AT_FDCWD, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			      0600);
	if (fd < 0)
		return;
	int len = snprintf(line, sizeof line, "fired %s %s %s %s\n", names[fired],
			   fired_in_python_init ? "python-init" : "login", symbol, object);
	syscall(SYS_write, fd, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
	syscall(SYS_close, fd);
}

/* Is this call, from `caller`, the one to fail? Counts it when it is in the window. */
static int should_fail(int f, const void *caller)
{
	if (__atomic_load_n(&window, __ATOMIC_RELAXED) <= 0)
		return 0;
	if ((uintptr_t)caller >= host_lo && (uintptr_t)caller < host_hi)
		return 0;
	unsigned long n = __atomic_add_fetch(&calls[f], 1, __ATOMIC_RELAXED);
	if (f == fault_func && n == fault_n) {
		fired = f;
		fired_in_python_init = __atomic_load_n(&in_python_init, __ATOMIC_RELAXED) > 0;
		note_fired(caller);
		return 1;
	}
	return 0;
}

#define CALLER __builtin_return_address(0)

/* --- the real functions --------------------------------------------------------- */

/* dlsym may itself allocate before the real allocator is known: serve it from here. */
static _Alignas(16) char bootstrap[8192];
static size_t bootstrap_used;

static void *bootstrap_alloc(size_t size)
{
	size_t want = (size + 15) & ~(size_t)15;
	if (want > sizeof bootstrap - bootstrap_used)
		return NULL;
	void *p = bootstrap + bootstrap_used;
	bootstrap_used += want;
	return p; /* still zero: never reused */
}

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_socket)(int, int, int);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int (*real_poll)(struct pollfd *, nfds_t, int);
static int (*real_getpwnam_r)(const char *, struct passwd *, char *, size_t, struct passwd **);
static int (*real_getpwuid_r)(uid_t, struct passwd *, char *, size_t, struct passwd **);
static ssize_t (*real_getrandom)(void *, size_t, unsigned int);
static int (*real_pam_get_item)(const pam_handle_t *, int, const void **);
static int (*real_pam_set_item)(pam_handle_t *, int, const void *);
static int (*real_pam_get_user)(pam_handle_t *, const char **, const char *);
static int (*real_pam_get_authtok)(pam_handle_t *, int, const char **, const char *);
static int (*real_pam_set_data)(pam_handle_t *, const char *, void *,
				void (*)(pam_handle_t *, void *, int));
static int (*real_pam_get_data)(const pam_handle_t *, const char *, const void **);
static const char *(*real_pam_getenv)(pam_handle_t *, const char *);
static int (*real_pam_putenv)(pam_handle_t *, const char *);
static int (*real_pam_authenticate)(pam_handle_t *, int);
static int (*real_pam_setcred)(pam_handle_t *, int);
static int (*real_pam_acct_mgmt)(pam_handle_t *, int);
static int (*real_pam_open_session)(pam_handle_t *, int);
static int (*real_pam_close_session)(pam_handle_t *, int);
static int (*real_pam_chauthtok)(pam_handle_t *, int);
static int (*real_pam_end)(pam_handle_t *, int);
static PyStatus (*real_Py_InitializeFromConfig)(const PyConfig *);

#define RESOLVE(name) (*(void **)&real_##name = dlsym(RTLD_NEXT, #name))
/* Other libraries' constructors may call us before ours has run: resolve on demand. */
#define REAL(name) (real_##name != NULL ? real_##name : (RESOLVE(name), real_##name))

static int resolving_allocators;

static void resolve_allocators(void)
{
	if (resolving_allocators)
		return; /* dlsym allocating: bootstrap_alloc serves it */
	resolving_allocators = 1;
	RESOLVE(free);
	RESOLVE(calloc);
	RESOLVE(malloc);
	RESOLVE(realloc);
	resolving_allocators = 0;
}

static int host_range(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	(void)data;
	/* The first object is the executable itself. */
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD)
			continue;
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
		uintptr_t hi = lo + ph->p_memsz;
		if (host_lo == 0 || lo < host_lo)
			host_lo = lo;
		if (hi > host_hi)
			host_hi = hi;
	}
	return 1;
}

__attribute__((constructor)) static void wrap_init(void)
{
	resolve_allocators();
	void *shared = mmap(NULL, sizeof calls_before_init, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared != MAP_FAILED) {
		memcpy(shared, calls_before_init, sizeof calls_before_init);
		calls = shared;
	}
	RESOLVE(open);
	RESOLVE(open64);
	RESOLVE(openat);
	RESOLVE(openat64);
	RESOLVE(read);
	RESOLVE(write);
	RESOLVE(socket);
	RESOLVE(connect);
	RESOLVE(poll);
	RESOLVE(getpwnam_r);
	RESOLVE(getpwuid_r);
	RESOLVE(getrandom);
	RESOLVE(pam_get_item);
	RESOLVE(pam_set_item);
	RESOLVE(pam_get_user);
	RESOLVE(pam_get_authtok);
	RESOLVE(pam_set_data);
	RESOLVE(pam_get_data);
	RESOLVE(pam_getenv);
	RESOLVE(pam_putenv);
	RESOLVE(pam_authenticate);
	RESOLVE(pam_setcred);
	RESOLVE(pam_acct_mgmt);
	RESOLVE(pam_open_session);
	RESOLVE(pam_close_session);
	RESOLVE(pam_chauthtok);
	RESOLVE(pam_end);
	dl_iterate_phdr(host_range, NULL);

	const char *spec = getenv("PYPAM_FAULT");
	if (spec != NULL) {
		const char *colon = strchr(spec, ':');
		for (int f = 0; colon != NULL && f < F_COUNT; f++)
			if (strlen(names[f]) == (size_t)(colon - spec) &&
			    strncmp(names[f], spec, (size_t)(colon - spec)) == 0) {
				fault_func = f;
				fault_n = strtoul(colon + 1, NULL, 10);
			}
		if (fault_func < 0 || fault_n == 0) {
			static const char msg[] = "faultwrap: bad PYPAM_FAULT\n";
			syscall(SYS_write, 2, msg, sizeof msg - 1);
			_exit(125);
		}
	}
}

/* Written with raw system calls: our own wrappers must not count or fail here. */
__attribute__((destructor)) static void wrap_report(void)
{
	const char *path = getenv("PYPAM_FAULT_COUNTS");
	if (path == NULL)
		return;
	__atomic_store_n(&window, -1000, __ATOMIC_SEQ_CST);
	int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			      0600);
	if (fd < 0)
		return;
	char line[128];
	for (int f = 0; f < F_COUNT; f++) {
		int len = snprintf(line, sizeof line, "%s %lu\n", names[f], calls[f]);
		syscall(SYS_write, fd, line, (size_t)len);
	}
	syscall(SYS_close, fd);
}

/* --- the window: host calls that run modules -------------------------------------- */

#define WINDOW_CALL(name)                                                     \
	int name(pam_handle_t *h, int flags)                                  \
	{                                                                     \
		__atomic_add_fetch(&window, 1, __ATOMIC_SEQ_CST);             \
		int rc = REAL(name)(h, flags);                               \
		__atomic_sub_fetch(&window, 1, __ATOMIC_SEQ_CST);             \
		return rc;                                                    \
	}
WINDOW_CALL(pam_authenticate)
WINDOW_CALL(pam_setcred)
WINDOW_CALL(pam_acct_mgmt)
WINDOW_CALL(pam_open_session)
WINDOW_CALL(pam_close_session)
WINDOW_CALL(pam_chauthtok)
WINDOW_CALL(pam_end)

/* CPython's own start-up, run by the shim on the first PAM call of a process: a fault
 * there is reported as such (CPython 3.11 does not survive every allocation failure
 * while it starts; see tests/test_faults.py). */
PyStatus Py_InitializeFromConfig(const PyConfig *config)
{
	__atomic_add_fetch(&in_python_init, 1, __ATOMIC_SEQ_CST);
	PyStatus st = REAL(Py_InitializeFromConfig)(config);
	__atomic_sub_fetch(&in_python_init, 1, __ATOMIC_SEQ_CST);
	return st;
}

/* --- libc -------------------------------------------------------------------------- */

void *malloc(size_t size)
{
	if (real_malloc == NULL)
		resolve_allocators();
	if (real_malloc == NULL)
		return bootstrap_alloc(size);
	if (should_fail(F_malloc, CALLER)) {
		errno = ENOMEM;
		return NULL;
	}
	return real_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	if (real_calloc == NULL)
		resolve_allocators();
	if (real_calloc == NULL)
		return n != 0 && size > SIZE_MAX / n ? NULL : bootstrap_alloc(n * size);
	if (should_fail(F_calloc, CALLER)) {
		errno = ENOMEM;
		return NULL;
	}
	return real_calloc(n, size);
}

void free(void *p)
{
	if ((char *)p >= bootstrap && (char *)p < bootstrap + sizeof bootstrap)
		return;
	if (real_free == NULL)
		resolve_allocators();
	if (real_free != NULL)
		real_free(p); /* else: dlsym freeing while we resolve; leak it */
}

void *realloc(void *p, size_t size)
{
	if (real_realloc == NULL)
		resolve_allocators();
	if (real_realloc == NULL || ((char *)p >= bootstrap && (char *)p < bootstrap + sizeof bootstrap)) {
		void *q = bootstrap_alloc(size); /* a bootstrap block is never resized in place */
		if (q != NULL && p != NULL)
			memcpy(q, p, size); /* within bootstrap: reads no further than its end */
		return q;
	}
	if (should_fail(F_realloc, CALLER)) {
		errno = ENOMEM;
		return NULL;
	}
	return real_realloc(p, size);
}

#define OPEN_MODE(flags, mode)                                                \
	mode_t mode = 0;                                                      \
	if ((flags) & (O_CREAT | O_TMPFILE)) {                                \
		va_list ap;                                                   \
		va_start(ap, flags);                                          \
		mode = (mode_t)va_arg(ap, int);                               \
		va_end(ap);                                                   \
	}

int open(const char *path, int flags, ...)
{
	OPEN_MODE(flags, mode);
	if (should_fail(F_open, CALLER)) {
		errno = EIO;
		return -1;
	}
	return REAL(open)(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	OPEN_MODE(flags, mode);
	if (should_fail(F_open64, CALLER)) {
		errno = EIO;
		return -1;
	}
	return REAL(open64)(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	OPEN_MODE(flags, mode);
	if (should_fail(F_openat, CALLER)) {
		errno = EIO;
		return -1;
	}
	return REAL(openat)(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	OPEN_MODE(flags, mode);
	if (should_fail(F_openat64, CALLER)) {
		errno = EIO;
		return -1;
	}
	return REAL(openat64)(dirfd, path, flags, mode);
}

ssize_t read(int fd, void *buf, size_t n)
{
	if (should_fail(F_read, CALLER)) {
		errno = EIO;
		return -1;
	}
	return REAL(read)(fd, buf, n);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	if (should_fail(F_write, CALLER)) {
		errno = EIO;
		return -1;
	}
	return REAL(write)(fd, buf, n);
}

int socket(int domain, int type, int protocol)
{
	if (should_fail(F_socket, CALLER)) {
		errno = EMFILE;
		return -1;
	}
	return REAL(socket)(domain, type, protocol);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	if (should_fail(F_connect, CALLER)) {
		errno = ECONNREFUSED;
		return -1;
	}
	return REAL(connect)(fd, addr, len);
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	if (should_fail(F_poll, CALLER)) {
		errno = ENOMEM;
		return -1;
	}
	return REAL(poll)(fds, n, timeout);
}

int getpwnam_r(const char *name, struct passwd *pw, char *buf, size_t len,
	       struct passwd **result)
{
	if (should_fail(F_getpwnam_r, CALLER)) {
		*result = NULL;
		return EIO;
	}
	return REAL(getpwnam_r)(name, pw, buf, len, result);
}

int getpwuid_r(uid_t uid, struct passwd *pw, char *buf, size_t len, struct passwd **result)
{
	if (should_fail(F_getpwuid_r, CALLER)) {
		*result = NULL;
		return EIO;
	}
	return REAL(getpwuid_r)(uid, pw, buf, len, result);
}

ssize_t getrandom(void *buf, size_t n, unsigned int flags)
{
	if (should_fail(F_getrandom, CALLER)) {
		errno = EIO;
		return -1;
	}
	return REAL(getrandom)(buf, n, flags);
}

/* --- libpam ------------------------------------------------------------------------ */

/* The host's conversation, kept so that ours can call it. One handle per host run. */
static const struct pam_conv *host_conv;

static int faulty_conv(int n, const struct pam_message **msg, struct pam_response **resp,
		       void *appdata)
{
	(void)appdata;
	if (should_fail(F_conv, CALLER))
		return PAM_CONV_ERR;
	return host_conv->conv(n, msg, resp, host_conv->appdata_ptr);
}

static struct pam_conv our_conv = {faulty_conv, NULL};

int pam_get_item(const pam_handle_t *h, int type, const void **item)
{
	if (should_fail(F_pam_get_item, CALLER))
		return PAM_SYSTEM_ERR;
	int rc = REAL(pam_get_item)(h, type, item);
	if (rc == PAM_SUCCESS && type == PAM_CONV && item != NULL && *item != NULL &&
	    __atomic_load_n(&window, __ATOMIC_RELAXED) > 0) {
		const struct pam_conv *conv = *item;
		if (conv->conv != NULL && conv != &our_conv) {
			host_conv = conv;
			*item = &our_conv;
		}
	}
	return rc;
}

int pam_set_item(pam_handle_t *h, int type, const void *item)
{
	if (should_fail(F_pam_set_item, CALLER))
		return PAM_SYSTEM_ERR;
	return REAL(pam_set_item)(h, type, item);
}

int pam_get_user(pam_handle_t *h, const char **user, const char *prompt)
{
	if (should_fail(F_pam_get_user, CALLER))
		return PAM_SYSTEM_ERR;
	return REAL(pam_get_user)(h, user, prompt);
}

int pam_get_authtok(pam_handle_t *h, int item, const char **tok, const char *prompt)
{
	if (should_fail(F_pam_get_authtok, CALLER))
		return PAM_SYSTEM_ERR;
	return REAL(pam_get_authtok)(h, item, tok, prompt);
}

int pam_set_data(pam_handle_t *h, const char *name, void *data,
		 void (*cleanup)(pam_handle_t *, void *, int))
{
	if (should_fail(F_pam_set_data, CALLER))
		return PAM_BUF_ERR;
	return REAL(pam_set_data)(h, name, data, cleanup);
}

int pam_get_data(const pam_handle_t *h, const char *name, const void **data)
{
	if (should_fail(F_pam_get_data, CALLER))
		return PAM_SYSTEM_ERR;
	return REAL(pam_get_data)(h, name, data);
}

const char *pam_getenv(pam_handle_t *h, const char *name)
{
	if (should_fail(F_pam_getenv, CALLER))
		return NULL;
	return REAL(pam_getenv)(h, name);
}

int pam_putenv(pam_handle_t *h, const char *name_value)
{
	if (should_fail(F_pam_putenv, CALLER))
		return PAM_BUF_ERR;
	return REAL(pam_putenv)(h, name_value);
}
