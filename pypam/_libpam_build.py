"""cffi builder for `pypam._libpam`: out-of-line ABI mode.

The declarations are compiled into a small Python module at build time, so a PAM
transaction never parses C at run time (that cost ~71 ms a process) and needs only
`_cffi_backend`. Run directly (`python pypam/_libpam_build.py`) it builds in place.
"""
import os

import cffi

ffi = cffi.FFI()
ffi.set_source("pypam._libpam", None)
ffi.cdef(
    """
    typedef struct pam_handle pam_handle_t;

    struct pam_message { int msg_style; const char *msg; };
    struct pam_response { char *resp; int resp_retcode; };
    struct pam_xauth_data { int namelen; char *name; int datalen; char *data; };
    struct pam_conv {
        int (*conv)(int num_msg, const struct pam_message **msg,
                    struct pam_response **resp, void *appdata_ptr);
        void *appdata_ptr;
    };

    int pam_get_item(const pam_handle_t *pamh, int item_type, const void **item);
    int pam_set_item(pam_handle_t *pamh, int item_type, const void *item);
    int pam_get_user(pam_handle_t *pamh, const char **user, const char *prompt);
    int pam_get_authtok(pam_handle_t *pamh, int item, const char **authtok,
                        const char *prompt);
    const char *pam_getenv(pam_handle_t *pamh, const char *name);
    int pam_putenv(pam_handle_t *pamh, const char *name_value);
    char **pam_getenvlist(pam_handle_t *pamh);
    int pam_set_data(pam_handle_t *pamh, const char *module_data_name, void *data,
                     void (*cleanup)(pam_handle_t *pamh, void *data, int error_status));
    int pam_get_data(const pam_handle_t *pamh, const char *module_data_name,
                     const void **data);
    const char *pam_strerror(pam_handle_t *pamh, int errnum);
    int pam_fail_delay(pam_handle_t *pamh, unsigned int musec_delay);
    void pam_syslog(const pam_handle_t *pamh, int priority, const char *fmt, ...);

    void *malloc(size_t size);
    void free(void *ptr);
    void explicit_bzero(void *s, size_t n);
    size_t strlen(const char *s);
    """
)

if __name__ == "__main__":
    ffi.compile(tmpdir=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
