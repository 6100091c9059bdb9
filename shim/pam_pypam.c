/* pam_pypam.c: the six PAM entry points, each handed to pypam.dispatch.call().
 *
 * The shim does three things only: start (or join) the interpreter, take the GIL, and
 * turn the dispatcher's answer into a PAM code. Every entry starts from a failure code;
 * only an int in PAM's range returned by the dispatcher is passed back. Nothing is ever
 * written to fds 0/1/2 and errors go to syslog through pam_syslog.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <syslog.h>

#define PAM_SM_AUTH
#define PAM_SM_ACCOUNT
#define PAM_SM_SESSION
#define PAM_SM_PASSWORD
#include <security/pam_ext.h>
#include <security/pam_modules.h>

#include "embed.h"

#ifndef PYPAM_MODULE_DIR
#error "PYPAM_MODULE_DIR (the default module directory) must be fixed at build time"
#endif
#ifndef PYPAM_LIBPYTHON
#error "PYPAM_LIBPYTHON (the soname of libpython) must be fixed at build time"
#endif

/* Built with -fvisibility=hidden; the version script then lists the same six names. */
#define PYPAM_EXPORT __attribute__((visibility("default")))

/* Result of the once-per-process start, read only after pthread_once. */
static int start_failed;
static char start_error[256];
static PyObject *dispatch_call; /* pypam.dispatch.call, a strong reference */
/* A fork by the host (any thread, maybe while a Python thread runs) must leave the
 * child's interpreter consistent: take the GIL and Python's fork locks around it. A fork
 * by Python code itself (os.fork, in the thread holding the GIL) already does exactly
 * that; doing it a second time deadlocks on Python 3.13, whose PyOS_BeforeFork locks
 * are not reentrant (a PIN login's TPM child hung every login on Debian 13). Thread-
 * local: each forking thread runs its own handlers. */
static __thread int fork_wrapped;
static __thread PyGILState_STATE fork_gil;

static void before_fork(void)
{
    fork_wrapped = !PyGILState_Check();
    if (!fork_wrapped)
        return;
    fork_gil = PyGILState_Ensure();
    PyOS_BeforeFork();
}

static void after_fork_parent(void)
{
    if (!fork_wrapped)
        return;
    PyOS_AfterFork_Parent();
    PyGILState_Release(fork_gil);
}

static void after_fork_child(void)
{
    if (!fork_wrapped)
        return;
    PyOS_AfterFork_Child();
    PyGILState_Release(fork_gil);
}

/* Replace sys.stdin/stdout/stderr (and their __*__ twins) by None, so that a print()
 * or a traceback in module code can never reach fds 0/1/2 (in `sshd -i` fd 1 is the
 * network). Only done in an interpreter we started: a Python host keeps its own. */
static int silence_stdio(void)
{
    static const char *names[] = {"stdin", "stdout", "stderr",
                                  "__stdin__", "__stdout__", "__stderr__"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (PySys_SetObject(names[i], Py_None) != 0)
            return -1;
    return 0;
}

/* CPython's signal module installs its SIGINT handler when first imported in the main
 * interpreter, even with install_signal_handlers off (3.11 signal_module_exec), so a
 * module importing signal, subprocess or asyncio would take Ctrl-C away from the host.
 * Import it once here and give SIGINT back its host disposition. The C module
 * `_signal` is the one that installs the handler; `signal` (its enum wrapper) would
 * also import enum, functools and collections: ~2 ms on every cold login. */
static int import_signal_keeping_sigint(void)
{
    struct sigaction host_sigint;
    if (sigaction(SIGINT, NULL, &host_sigint) != 0)
        return -1;
    PyObject *mod = PyImport_ImportModule("_signal");
    int rc = mod != NULL ? 0 : -1;
    Py_XDECREF(mod);
    if (sigaction(SIGINT, &host_sigint, NULL) != 0)
        rc = -1;
    return rc;
}

static int version_matches_build(void)
{
    const char *running = Py_GetVersion(); /* e.g. "3.11.2 (main, ...)" */
    const char *built = pypam_embed_build_version();
    size_t n = strlen(built);
    return strncmp(running, built, n) == 0 && running[n] == '.';
}

static void start_interpreter(void)
{
    start_failed = 1;
    if (!version_matches_build()) {
        const char *running = Py_GetVersion();
        snprintf(start_error, sizeof start_error,
                 "host runs Python %.*s, pam_pypam was built for %s",
                 (int)strcspn(running, " "), running, pypam_embed_build_version());
        return;
    }
    if (Py_IsInitialized()) {
        /* A Python application called PAM: join its interpreter under the GIL. */
        PyGILState_STATE g = PyGILState_Ensure();
        int rc = pypam_embed_extend_path(start_error, sizeof start_error);
        PyGILState_Release(g);
        if (rc == 0)
            start_failed = 0;
        return;
    }
    /* libpam dlopens us RTLD_LOCAL; extension modules need libpython's symbols. */
    if (dlopen(PYPAM_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD) == NULL) {
        snprintf(start_error, sizeof start_error, "cannot make %s global", PYPAM_LIBPYTHON);
        return;
    }
    if (pypam_embed_init(0, NULL, NULL, NULL, start_error, sizeof start_error) != 0)
        return;
    if (silence_stdio() != 0 || import_signal_keeping_sigint() != 0) {
        PyErr_Clear();
        snprintf(start_error, sizeof start_error, "cannot detach stdio or keep SIGINT");
        PyEval_SaveThread();
        return;
    }
    /* Never finalised: extension modules cannot be initialised twice in a process. */
    PyEval_SaveThread();
    if (pthread_atfork(before_fork, after_fork_parent, after_fork_child) != 0) {
        snprintf(start_error, sizeof start_error, "pthread_atfork failed");
        return;
    }
    start_failed = 0;
}

/* pypam.dispatch.call, imported once. When the import fails (pypam, or cffi's compiled
 * part, missing or built for another Python) the reason goes to syslog in one line. */
static PyObject *load_dispatcher(pam_handle_t *pamh)
{
    if (dispatch_call == NULL) {
        PyObject *mod = PyImport_ImportModule("pypam.dispatch");
        if (mod != NULL) {
            dispatch_call = PyObject_GetAttrString(mod, "call");
            Py_DECREF(mod);
        }
    }
    if (dispatch_call == NULL && PyErr_Occurred()) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *text = value != NULL ? PyObject_Str(value) : NULL;
        const char *reason = text != NULL ? PyUnicode_AsUTF8(text) : NULL;
        PyErr_Clear();
        pam_syslog(pamh, LOG_ERR, "pypam: cannot import pypam (%s: %.200s); %s",
                   type != NULL ? ((PyTypeObject *)type)->tp_name : "error",
                   reason != NULL ? reason : "?", PYPAM_FIX_HINT);
        Py_XDECREF(text);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    return dispatch_call;
}

/* Build [arg, ...] from PAM's argv; bytes that are not UTF-8 survive as surrogates. */
static PyObject *argv_list(int argc, const char **argv)
{
    PyObject *list = PyList_New(0);
    for (int i = 0; list != NULL && i < argc; i++) {
        PyObject *s = PyUnicode_DecodeUTF8(argv[i], (Py_ssize_t)strlen(argv[i]),
                                           "surrogateescape");
        if (s == NULL || PyList_Append(list, s) != 0)
            Py_CLEAR(list);
        Py_XDECREF(s);
    }
    return list;
}

static int call_python(pam_handle_t *pamh, const char *hook, int flags, int argc,
                       const char **argv)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    int result = PAM_SERVICE_ERR;

    pthread_once(&once, start_interpreter);
    if (start_failed) {
        pam_syslog(pamh, LOG_ERR, "pypam: cannot start Python: %s; %s", start_error,
                   PYPAM_FIX_HINT);
        return PAM_SERVICE_ERR;
    }

    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *func = load_dispatcher(pamh);
    PyObject *args = argv_list(argc, argv);
    PyObject *ret = NULL;
    if (func != NULL && args != NULL)
        ret = PyObject_CallFunction(func, "sKiOs", hook,
                                    (unsigned long long)(uintptr_t)pamh, flags, args,
                                    PYPAM_MODULE_DIR);
    if (ret != NULL && PyLong_CheckExact(ret)) {
        long code = PyLong_AsLong(ret);
        if (code >= 0 && code < _PAM_RETURN_VALUES)
            result = (int)code;
    }
    if (PyErr_Occurred()) {
        /* The dispatcher catches module errors itself; reaching here means pypam is
         * broken or missing. Never PyErr_Print: on SystemExit it exits the host. */
        PyErr_Clear();
        pam_syslog(pamh, LOG_ERR, "pypam: dispatcher failed for %s", hook);
        result = PAM_SERVICE_ERR;
    } else if (result == PAM_SERVICE_ERR && ret != NULL && !PyLong_CheckExact(ret)) {
        pam_syslog(pamh, LOG_ERR, "pypam: dispatcher returned a non-int for %s", hook);
    }
    Py_XDECREF(ret);
    Py_XDECREF(args);
    PyGILState_Release(gil);
    return result;
}

PYPAM_EXPORT int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    return call_python(pamh, "authenticate", flags, argc, argv);
}

PYPAM_EXPORT int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    return call_python(pamh, "setcred", flags, argc, argv);
}

PYPAM_EXPORT int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    return call_python(pamh, "acct_mgmt", flags, argc, argv);
}

PYPAM_EXPORT int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    return call_python(pamh, "open_session", flags, argc, argv);
}

PYPAM_EXPORT int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    return call_python(pamh, "close_session", flags, argc, argv);
}

PYPAM_EXPORT int pam_sm_chauthtok(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    return call_python(pamh, "chauthtok", flags, argc, argv);
}
