/* pinutil_launcher.c: the native `pinutil` executable, installed setgid `tss`.
 *
 * Linux ignores set-id bits on scripts, so this small program is what gets them. It
 * trusts nothing the caller controls: the environment is cleared, fds 0-2 are made to
 * exist and usable (so a secret we write or a file we open can never land on a closed
 * stdio fd, and our exit status stays meaningful),
 * argv[0] is ignored (argc may even be 0), and Python starts with the fixed, isolated
 * configuration of embed.c before running the CLI. The default policy path is fixed
 * at build time too (PINUTIL_POLICY_PATH): a caller cannot point it elsewhere.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "embed.h"

#ifndef PINUTIL_POLICY_PATH
#error "PINUTIL_POLICY_PATH must be fixed at build time"
#endif

/* Checked by build_native.py: the path holds no quote or backslash. */
static const char run_cli[] =
    "import sys\n"
    "try:\n"
    "    import pinutil.cli.app\n"
    "except ImportError as e:\n"
    "    sys.stderr.write(f'pinutil: cannot import its Python parts ({type(e).__name__}: "
    "{e}); " PYPAM_FIX_HINT "\\n')\n"
    "    sys.exit(70)\n"
    "sys.exit(pinutil.cli.app.main(sys.argv[1:], policy_path='" PINUTIL_POLICY_PATH "'))\n";

enum { EXIT_LAUNCH_FAILED = 70 }; /* EX_SOFTWARE: nothing ran (also run_cli's 70) */

/* Give fds 0-2 a usable /dev/null unless they are open in a usable mode. For a set-id
 * program started with them closed, glibc opens them itself, deliberately in the wrong
 * mode (stdout read-only...), so every write would fail and our exit status (the
 * helper protocol) would become Python's 120 "could not flush". */
static int ensure_stdio_usable(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        int want = fd == 0 ? O_RDONLY : O_WRONLY;
        int flags = fcntl(fd, F_GETFL);
        if (flags != -1) {
            int mode = flags & O_ACCMODE;
            if (mode == O_RDWR || mode == want)
                continue;
        } else if (errno != EBADF) {
            return -1;
        }
        int nfd = open("/dev/null", want | O_CLOEXEC);
        if (nfd < 0)
            return -1;
        if (nfd != fd) {
            /* dup2 clears O_CLOEXEC on the target: fds 0-2 stay inheritable. */
            if (dup2(nfd, fd) != fd) {
                close(nfd);
                return -1;
            }
            close(nfd);
        } else if (fcntl(fd, F_SETFD, 0) != 0) {
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    char err[256];

    if (ensure_stdio_usable() != 0)
        return EXIT_LAUNCH_FAILED;
    if (clearenv() != 0)
        return EXIT_LAUNCH_FAILED;
    /* A fixed, minimal environment for any child the CLI may start. */
    if (setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1) != 0)
        return EXIT_LAUNCH_FAILED;
    umask(077);

    /* argv[0] is the caller's to choose: skip it, and cope with argc == 0. */
    int nargs = argc > 0 ? argc - 1 : 0;
    char *const *args = argc > 0 ? argv + 1 : NULL;
    if (pypam_embed_init(nargs, args, NULL, run_cli, err, sizeof err) != 0) {
        dprintf(2, "pinutil: cannot start Python: %s; %s\n", err, PYPAM_FIX_HINT);
        return EXIT_LAUNCH_FAILED;
    }
    /* Runs the CLI, turns SystemExit into the exit status, flushes stdout. */
    return Py_RunMain();
}
