/* embed.h: start CPython safely inside someone else's process.
 *
 * Shared by pam_pypam.so and the pinutil launcher. Every path below is fixed at build
 * time (see Makefile): nothing is derived from PATH, argv[0] or the environment,
 * because both run inside set-id programs whose environment belongs to the caller.
 */
#ifndef PYPAM_EMBED_H
#define PYPAM_EMBED_H

#include <stddef.h>

/* The one fix for every "the Python parts do not fit this binary" failure (a Python
 * upgrade removed the stdlib it was built for, pypam or cffi missing or built for
 * another Python): said in syslog and by pinutil, in one line. */
#define PYPAM_FIX_HINT "rebuild and reinstall pypam for the installed Python " \
    "(make install, or reinstall its package)"

/* Fill the interpreter configuration every pypam binary uses: isolated, UTF-8 mode,
 * no signal handlers, no bytecode writing, no site import, and sys.path set to the
 * build-time list. `argv` (may be NULL) becomes sys.argv after a fixed program name;
 * `run_module` / `run_command` (may be NULL) are for Py_RunMain.
 * Returns 0 on success; on failure writes a reason into `err` and returns -1. Writes
 * nothing to fds 0-2: a missing standard library (CPython would dump its path
 * configuration on stderr) is detected before CPython starts. */
int pypam_embed_init(int argc, char *const *argv, const char *run_module,
                     const char *run_command, char *err, size_t errlen);

/* The major.minor this binary was compiled against, e.g. "3.11". */
const char *pypam_embed_build_version(void);

/* Append the build-time search path to an interpreter someone else started
 * (a Python host), so `pypam` can be imported there. Call with the GIL held.
 * Returns 0 on success, -1 with a Python exception cleared and `err` set. */
int pypam_embed_extend_path(char *err, size_t errlen);

#endif
