/* embed.c: the one place that decides how CPython starts in a pypam binary.
 *
 * Why each setting (README, "Security design"):
 * - isolated pre-config and config: PYTHON* variables of a set-id caller are ignored;
 * - program_name, executable and home fixed: otherwise CPython looks `python3` up in
 *   the caller's PATH and derives the stdlib location from it (a planted stdlib ran
 *   as root through pam_python);
 * - module_search_paths fixed and site disabled: nothing on sys.path that the build
 *   did not name, no .pth files executed;
 * - UTF-8 mode with configure_locale off: never call setlocale() in the host;
 * - install_signal_handlers off: the host's signal dispositions stay as they were;
 * - write_bytecode off: never create __pycache__ files as root;
 * - the standard library checked first: when a Python upgrade has removed the one we
 *   were built for, CPython would print a 23-line "Python path configuration" dump on
 *   fd 2 (the user's terminal, or the network in `sshd -i`) before failing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "embed.h"

#ifndef PYPAM_PYTHON_HOME
#error "PYPAM_PYTHON_HOME must be fixed at build time"
#endif
#ifndef PYPAM_PYTHON_EXECUTABLE
#error "PYPAM_PYTHON_EXECUTABLE must be fixed at build time"
#endif
#ifndef PYPAM_SEARCH_PATH
#error "PYPAM_SEARCH_PATH (colon-separated sys.path) must be fixed at build time"
#endif
#ifndef PYPAM_STDLIB
#error "PYPAM_STDLIB (the standard library directory of the build's Python) must be fixed at build time"
#endif

#define STR2(x) #x
#define STR(x) STR2(x)

const char *pypam_embed_build_version(void)
{
    return STR(PY_MAJOR_VERSION) "." STR(PY_MINOR_VERSION);
}

static int status_failed(PyStatus st, const char *what, char *err, size_t errlen)
{
    if (!PyStatus_Exception(st))
        return 0;
    /* Never Py_ExitStatusException: it would exit() the host process. */
    snprintf(err, errlen, "%s: %s", what, st.err_msg ? st.err_msg : "failed");
    return -1;
}

/* Split the build-time search path and append each entry to config->module_search_paths. */
static PyStatus set_search_path(PyConfig *config)
{
    const char *spec = PYPAM_SEARCH_PATH;
    config->module_search_paths_set = 1;
    while (*spec) {
        const char *end = strchr(spec, ':');
        size_t len = end ? (size_t)(end - spec) : strlen(spec);
        if (len > 0) {
            char entry[4096];
            if (len >= sizeof entry)
                return PyStatus_Error("search path entry too long");
            memcpy(entry, spec, len);
            entry[len] = '\0';
            wchar_t *wide = Py_DecodeLocale(entry, NULL);
            if (wide == NULL)
                return PyStatus_NoMemory();
            PyStatus st = PyWideStringList_Append(&config->module_search_paths, wide);
            PyMem_RawFree(wide);
            if (PyStatus_Exception(st))
                return st;
        }
        spec += len;
        if (*spec == ':')
            spec++;
    }
    return PyStatus_Ok();
}

/* The first module CPython imports while starting: without it, Py_InitializeFromConfig
 * writes its path configuration to fd 2 and fails. */
static int stdlib_present(void)
{
    struct stat st;
    return stat(PYPAM_STDLIB "/encodings/__init__.py", &st) == 0 && S_ISREG(st.st_mode);
}

int pypam_embed_init(int argc, char *const *argv, const char *run_module,
                     const char *run_command, char *err, size_t errlen)
{
    if (!stdlib_present()) {
        snprintf(err, errlen, "the standard library of Python %s (%s) is missing",
                 pypam_embed_build_version(), PYPAM_STDLIB);
        return -1;
    }

    PyPreConfig pre;
    PyPreConfig_InitIsolatedConfig(&pre);
    pre.utf8_mode = 1;
    pre.configure_locale = 0;
    if (status_failed(Py_PreInitialize(&pre), "pre-initialize", err, errlen))
        return -1;

    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    PyStatus st;
    config.install_signal_handlers = 0;
    config.write_bytecode = 0;
    config.site_import = 0;
    config.user_site_directory = 0;
    config.pathconfig_warnings = 0;
    config.parse_argv = 0;
    config.faulthandler = 0;
    config.buffered_stdio = 1;

    st = PyConfig_SetBytesString(&config, &config.program_name, PYPAM_PYTHON_EXECUTABLE);
    if (!PyStatus_Exception(st))
        st = PyConfig_SetBytesString(&config, &config.executable, PYPAM_PYTHON_EXECUTABLE);
    if (!PyStatus_Exception(st))
        st = PyConfig_SetBytesString(&config, &config.home, PYPAM_PYTHON_HOME);
    if (!PyStatus_Exception(st))
        st = set_search_path(&config);
    if (!PyStatus_Exception(st) && run_module != NULL)
        st = PyConfig_SetBytesString(&config, &config.run_module, run_module);
    if (!PyStatus_Exception(st) && run_command != NULL)
        st = PyConfig_SetBytesString(&config, &config.run_command, run_command);
    if (!PyStatus_Exception(st)) {
        /* sys.argv[0] is a fixed name: nothing may be derived from the caller's argv[0]. */
        char *fixed[1] = {"pypam"};
        int n = 1;
        char **all = NULL;
        if (argc > 0 && argv != NULL) {
            all = PyMem_RawCalloc((size_t)argc + 1, sizeof(char *));
            if (all == NULL) {
                st = PyStatus_NoMemory();
            } else {
                all[0] = fixed[0];
                for (int i = 0; i < argc; i++)
                    all[i + 1] = argv[i];
                n = argc + 1;
            }
        }
        if (!PyStatus_Exception(st))
            st = PyConfig_SetBytesArgv(&config, n, all ? all : fixed);
        PyMem_RawFree(all);
    }
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    return status_failed(st, "initialize", err, errlen);
}

int pypam_embed_extend_path(char *err, size_t errlen)
{
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    if (path == NULL || !PyList_Check(path)) {
        snprintf(err, errlen, "host interpreter has no sys.path list");
        return -1;
    }
    const char *spec = PYPAM_SEARCH_PATH;
    while (*spec) {
        const char *end = strchr(spec, ':');
        Py_ssize_t len = end ? (Py_ssize_t)(end - spec) : (Py_ssize_t)strlen(spec);
        if (len > 0) {
            PyObject *entry = PyUnicode_DecodeUTF8(spec, len, "surrogateescape");
            if (entry == NULL)
                goto fail;
            int present = PySequence_Contains(path, entry);
            /* Appended, not prepended: the host's own modules keep precedence in its
             * own process; it is the host's process, not a privilege boundary. */
            int rc = present == 0 ? PyList_Append(path, entry) : present;
            Py_DECREF(entry);
            if (rc < 0)
                goto fail;
        }
        spec += len;
        if (*spec == ':')
            spec++;
    }
    return 0;
fail:
    PyErr_Clear();
    snprintf(err, errlen, "cannot extend the host's sys.path");
    return -1;
}
