"""cffi builder for `pinutil.tpm._tss`, our own small binding to tpm2-tss (ESAPI and SAPI).

Why not tpm2_pytss: importing it costs ~55 ms and ~35 MB (it pulls in
`cryptography`), more than the whole PAM login budget. This binding declares only
what the PIN index (`pinutil/pin/index.py`) and the master key (`pinutil/master_key/`) use.

SAPI and the P-256 helper below serve the login path (`tpm/sapi.py`): tpm2-tss 3.2.1's
ESAPI creates a fresh OpenSSL library context for every hash and HMAC it computes
(~0.25 ms each here), which made a salted PIN check cost ~5 ms of client CPU.

API mode, out of line: the C compiler checks every declaration below against the
real headers at build time, and fills in struct layouts where we wrote `...;`.

Build in place:  .venv/bin/python pinutil/tpm/binding_build.py   ->  pinutil/tpm/_tss.*.so
setup.py lists it as cffi_modules=["pinutil/tpm/binding_build.py:ffi"].
"""
import os

import cffi

ffi = cffi.FFI()

# Our half of an ECDH salt on NIST P-256, in C (p256_ecdh.c says why).
HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "p256_ecdh.c")) as source:
    P256_ECDH_SOURCE = source.read()

ffi.set_source(
    "pinutil.tpm._tss",
    "#include <tss2/tss2_esys.h>\n#include <tss2/tss2_sys.h>\n"
    "#include <tss2/tss2_tctildr.h>\n#include <tss2/tss2_rc.h>\n" + P256_ECDH_SOURCE,
    libraries=["tss2-esys", "tss2-sys", "tss2-tctildr", "tss2-rc", "tss2-mu", "crypto"],
)

ffi.cdef(
    r"""
/* ---- scalar types (exact, from tss2_common.h / tss2_tpm2_types.h) ---- */
typedef uint8_t  UINT8;
typedef uint8_t  BYTE;
typedef uint16_t UINT16;
typedef uint32_t UINT32;
typedef uint32_t TSS2_RC;
typedef uint32_t ESYS_TR;
typedef uint32_t TPM2_HANDLE;
typedef uint32_t TPMI_DH_PERSISTENT;
typedef uint32_t TPMI_RH_NV_INDEX;
typedef uint32_t TPMI_RH_NV_AUTH;
typedef uint32_t TPMI_RH_HIERARCHY;
typedef uint32_t TPMI_DH_OBJECT;
typedef uint32_t TPMI_DH_ENTITY;
typedef uint32_t TPMI_DH_CONTEXT;
typedef uint32_t TPMI_SH_AUTH_SESSION;
typedef uint32_t TPM2_CC;
typedef uint32_t TPM2_CAP;
typedef uint32_t TPMA_NV;
typedef uint32_t TPMA_OBJECT;
typedef uint32_t TPMA_CC;
typedef uint8_t  TPMA_SESSION;
typedef uint8_t  TPM2_SE;
typedef uint8_t  TPMI_YES_NO;
typedef uint16_t TPM2_ALG_ID;
typedef uint16_t TPMI_ALG_HASH;
typedef uint16_t TPMI_ALG_PUBLIC;
typedef uint16_t TPMI_ALG_SYM;
typedef uint16_t TPMI_ALG_SYM_OBJECT;
typedef uint16_t TPMI_ALG_SYM_MODE;
typedef uint16_t TPMI_ALG_KEYEDHASH_SCHEME;
typedef uint16_t TPMI_ALG_ECC_SCHEME;
typedef uint16_t TPMI_ALG_KDF;
typedef uint16_t TPMI_ECC_CURVE;
typedef uint16_t TPMI_AES_KEY_BITS;
typedef uint16_t TPM2_KEY_BITS;

/* ---- opaque contexts ---- */
typedef ... ESYS_CONTEXT;
typedef ... TSS2_TCTI_CONTEXT;
typedef ... TSS2_SYS_CONTEXT;
typedef ... TSS2_ABI_VERSION;

/* ---- sized buffers ---- */
typedef struct { UINT16 size; BYTE buffer[...]; } TPM2B_DIGEST;
typedef TPM2B_DIGEST TPM2B_AUTH;
typedef TPM2B_DIGEST TPM2B_NONCE;
typedef struct { UINT16 size; BYTE name[...]; } TPM2B_NAME;
typedef struct { UINT16 size; BYTE buffer[...]; } TPM2B_DATA;
typedef struct { UINT16 size; BYTE buffer[...]; } TPM2B_MAX_NV_BUFFER;
typedef struct { UINT16 size; BYTE buffer[...]; } TPM2B_MAX_BUFFER;
typedef struct { UINT16 size; BYTE buffer[...]; } TPM2B_SENSITIVE_DATA;
typedef struct { UINT16 size; BYTE buffer[...]; } TPM2B_PRIVATE;
typedef struct { UINT16 size; BYTE buffer[...]; } TPM2B_ECC_PARAMETER;
typedef struct { UINT16 size; BYTE secret[...]; } TPM2B_ENCRYPTED_SECRET;

/* ---- sensitive area for Create/CreatePrimary (data = a secret to import) ---- */
typedef struct { TPM2B_AUTH userAuth; TPM2B_SENSITIVE_DATA data; } TPMS_SENSITIVE_CREATE;
typedef struct { UINT16 size; TPMS_SENSITIVE_CREATE sensitive; } TPM2B_SENSITIVE_CREATE;

/* ---- NV public area ---- */
typedef struct {
    TPMI_RH_NV_INDEX nvIndex;
    TPMI_ALG_HASH nameAlg;
    TPMA_NV attributes;
    TPM2B_DIGEST authPolicy;
    UINT16 dataSize;
} TPMS_NV_PUBLIC;
typedef struct { UINT16 size; TPMS_NV_PUBLIC nvPublic; } TPM2B_NV_PUBLIC;

/* ---- symmetric definitions (sessions and storage keys) ---- */
typedef union { TPMI_AES_KEY_BITS aes; TPM2_KEY_BITS sym; TPMI_ALG_HASH exclusiveOr; ...; } TPMU_SYM_KEY_BITS;
typedef union { TPMI_ALG_SYM_MODE aes; TPMI_ALG_SYM_MODE sym; ...; } TPMU_SYM_MODE;
typedef struct { TPMI_ALG_SYM algorithm; TPMU_SYM_KEY_BITS keyBits; TPMU_SYM_MODE mode; } TPMT_SYM_DEF;
typedef struct { TPMI_ALG_SYM_OBJECT algorithm; TPMU_SYM_KEY_BITS keyBits; TPMU_SYM_MODE mode; } TPMT_SYM_DEF_OBJECT;

/* ---- keyedHash (HMAC key) parameters ---- */
typedef struct { TPMI_ALG_HASH hashAlg; } TPMS_SCHEME_HMAC;
typedef union { TPMS_SCHEME_HMAC hmac; ...; } TPMU_SCHEME_KEYEDHASH;
typedef struct { TPMI_ALG_KEYEDHASH_SCHEME scheme; TPMU_SCHEME_KEYEDHASH details; } TPMT_KEYEDHASH_SCHEME;
typedef struct { TPMT_KEYEDHASH_SCHEME scheme; } TPMS_KEYEDHASH_PARMS;

/* ---- ECC parameters (storage primary) ---- */
typedef union { ...; } TPMU_ASYM_SCHEME;
typedef struct { TPMI_ALG_ECC_SCHEME scheme; TPMU_ASYM_SCHEME details; } TPMT_ECC_SCHEME;
typedef union { ...; } TPMU_KDF_SCHEME;
typedef struct { TPMI_ALG_KDF scheme; TPMU_KDF_SCHEME details; } TPMT_KDF_SCHEME;
typedef struct {
    TPMT_SYM_DEF_OBJECT symmetric;
    TPMT_ECC_SCHEME scheme;
    TPMI_ECC_CURVE curveID;
    TPMT_KDF_SCHEME kdf;
} TPMS_ECC_PARMS;
typedef struct { TPM2B_ECC_PARAMETER x; TPM2B_ECC_PARAMETER y; } TPMS_ECC_POINT;

typedef union { TPMS_KEYEDHASH_PARMS keyedHashDetail; TPMS_ECC_PARMS eccDetail; ...; } TPMU_PUBLIC_PARMS;
typedef union { TPM2B_DIGEST keyedHash; TPMS_ECC_POINT ecc; ...; } TPMU_PUBLIC_ID;
typedef struct {
    TPMI_ALG_PUBLIC type;
    TPMI_ALG_HASH nameAlg;
    TPMA_OBJECT objectAttributes;
    TPM2B_DIGEST authPolicy;
    TPMU_PUBLIC_PARMS parameters;
    TPMU_PUBLIC_ID unique;
} TPMT_PUBLIC;
typedef struct { UINT16 size; TPMT_PUBLIC publicArea; } TPM2B_PUBLIC;

/* ---- outputs we only pass through or free ---- */
typedef struct { UINT32 count; ...; } TPML_PCR_SELECTION;
typedef struct { UINT16 size; ...; } TPM2B_CREATION_DATA;
typedef struct { ...; } TPMT_TK_CREATION;

/* ---- SAPI authorisation areas ---- */
typedef struct {
    TPMI_SH_AUTH_SESSION sessionHandle;
    TPM2B_NONCE nonce;
    TPMA_SESSION sessionAttributes;
    TPM2B_AUTH hmac;
} TPMS_AUTH_COMMAND;
typedef struct { TPM2B_NONCE nonce; TPMA_SESSION sessionAttributes; TPM2B_AUTH hmac; } TPMS_AUTH_RESPONSE;
typedef struct { uint16_t count; TPMS_AUTH_COMMAND auths[...]; } TSS2L_SYS_AUTH_COMMAND;
typedef struct { uint16_t count; TPMS_AUTH_RESPONSE auths[...]; } TSS2L_SYS_AUTH_RESPONSE;

/* ---- capabilities: the command list and TPM properties (TPM2_PT_PERMANENT) ---- */
typedef struct { UINT32 count; TPMA_CC commandAttributes[...]; } TPML_CCA;
typedef struct { UINT32 count; TPM2_HANDLE handle[...]; } TPML_HANDLE;
typedef struct { UINT32 property; UINT32 value; } TPMS_TAGGED_PROPERTY;
typedef struct { UINT32 count; TPMS_TAGGED_PROPERTY tpmProperty[...]; } TPML_TAGGED_TPM_PROPERTY;
typedef union { TPML_CCA command; TPML_HANDLE handles; TPML_TAGGED_TPM_PROPERTY tpmProperties; ...; } TPMU_CAPABILITIES;
typedef struct { TPM2_CAP capability; TPMU_CAPABILITIES data; } TPMS_CAPABILITY_DATA;

/* ---- constants the compiler fills in ---- */
#define ESYS_TR_NONE ...
#define ESYS_TR_PASSWORD ...
#define ESYS_TR_RH_OWNER ...
#define ESYS_TR_RH_LOCKOUT ...
#define TPM2_RH_OWNER ...
#define TPM2_RH_NULL ...
#define TPM2_RH_PLATFORM ...
#define TPM2_PT_STARTUP_CLEAR ...
#define TPMA_STARTUP_CLEAR_PHENABLE ...
#define TPM2_RS_PW ...

/* spec constants, checked by the compiler against tss2_tpm2_types.h */
#define TPM2_ALG_SHA256 ...
#define TPM2_ALG_ECC ...
#define TPM2_ALG_KEYEDHASH ...
#define TPM2_ALG_HMAC ...
#define TPM2_ALG_AES ...
#define TPM2_ALG_XOR ...
#define TPM2_ALG_CFB ...
#define TPM2_ALG_NULL ...
#define TPM2_ECC_NIST_P256 ...
#define TPM2_SE_HMAC ...
#define TPM2_SE_POLICY ...
#define TPM2_SE_TRIAL ...
#define TPM2_CAP_COMMANDS ...
#define TPM2_CAP_TPM_PROPERTIES ...
#define TPM2_PT_PERMANENT ...
#define TPMA_PERMANENT_OWNERAUTHSET ...
#define TPMA_PERMANENT_LOCKOUTAUTHSET ...
#define TPM2_CC_NV_Write ...
#define TPM2_CC_NV_Read ...
#define TPM2_CC_CreatePrimary ...
#define TPM2_CC_PolicyNvWritten ...
#define TPM2_CC_HMAC ...
#define TPMA_CC_COMMANDINDEX_MASK ...
#define TPMA_SESSION_CONTINUESESSION ...
#define TPMA_SESSION_DECRYPT ...
#define TPMA_SESSION_ENCRYPT ...
#define TPMA_OBJECT_FIXEDTPM ...
#define TPMA_OBJECT_FIXEDPARENT ...
#define TPMA_OBJECT_SENSITIVEDATAORIGIN ...
#define TPMA_OBJECT_USERWITHAUTH ...
#define TPMA_OBJECT_NODA ...
#define TPMA_OBJECT_RESTRICTED ...
#define TPMA_OBJECT_DECRYPT ...
#define TPMA_OBJECT_SIGN_ENCRYPT ...
#define TPMA_NV_TPM2_NT_MASK ...
#define TPMA_NV_TPM2_NT_SHIFT ...
#define TPM2_NT_PIN_FAIL ...
#define TPMA_NV_AUTHREAD ...
#define TPMA_NV_OWNERREAD ...
#define TPMA_NV_POLICYWRITE ...
#define TPMA_NV_NO_DA ...
#define TPMA_NV_ORDERLY ...
#define TPMA_NV_WRITTEN ...
/* return codes (pinutil/tpm/rc.py): the only RC numbers in pinutil are these */
#define TPM2_RC_FMT1 ...
#define TPM2_RC_P ...
#define TPM2_RC_N_MASK ...
#define TPM2_RC_BAD_AUTH ...
#define TPM2_RC_HIERARCHY ...
#define TPM2_RC_AUTH_FAIL ...
#define TPM2_RC_AUTH_UNAVAILABLE ...
#define TPM2_RC_NV_SPACE ...
#define TPM2_RC_NV_DEFINED ...
#define TPM2_RC_HANDLE ...
#define TPM2_RC_POLICY_FAIL ...
#define TPM2_RC_ATTRIBUTES ...
#define TPM2_RC_SIZE ...
#define TPM2_RC_LOCKOUT ...
#define TSS2_RC_LAYER_MASK ...
#define TSS2_TCTI_RC_LAYER ...
#define TSS2_RESMGR_RC_LAYER ...
#define TSS2_RESMGR_TPM_RC_LAYER ...
#define TSS2_BASE_RC_GENERAL_FAILURE ...
#define TSS2_BASE_RC_NO_CONNECTION ...
#define TSS2_BASE_RC_TRY_AGAIN ...
#define TSS2_BASE_RC_IO_ERROR ...
#define TSS2_BASE_RC_MALFORMED_RESPONSE ...
#define TSS2_BASE_RC_INSUFFICIENT_RESPONSE ...
#define TSS2_TCTI_RC_IO_ERROR ...
#define TSS2_ESYS_RC_BAD_TR ...

/* ---- TCTI loader ---- */
TSS2_RC Tss2_TctiLdr_Initialize(const char *nameConf, TSS2_TCTI_CONTEXT **context);
void Tss2_TctiLdr_Finalize(TSS2_TCTI_CONTEXT **context);

/* ---- return code decoding (messages for logs only; code branches on numbers) ---- */
const char *Tss2_RC_Decode(TSS2_RC rc);

/* ---- ESAPI context ---- */
TSS2_RC Esys_Initialize(ESYS_CONTEXT **esys_context, TSS2_TCTI_CONTEXT *tcti, TSS2_ABI_VERSION *abiVersion);
void Esys_Finalize(ESYS_CONTEXT **context);
TSS2_RC Esys_SetTimeout(ESYS_CONTEXT *esys_context, int32_t timeout);
void Esys_Free(void *__ptr);

/* ---- ESYS_TR handling ---- */
TSS2_RC Esys_TR_FromTPMPublic(ESYS_CONTEXT *esysContext, TPM2_HANDLE tpm_handle, ESYS_TR optionalSession1, ESYS_TR optionalSession2, ESYS_TR optionalSession3, ESYS_TR *object);
TSS2_RC Esys_TR_Close(ESYS_CONTEXT *esys_context, ESYS_TR *rsrc_handle);
TSS2_RC Esys_TR_SetAuth(ESYS_CONTEXT *esysContext, ESYS_TR handle, TPM2B_AUTH const *authValue);
TSS2_RC Esys_TR_GetTpmHandle(ESYS_CONTEXT *esys_context, ESYS_TR esys_handle, TPM2_HANDLE *tpm_handle);
TSS2_RC Esys_TR_GetName(ESYS_CONTEXT *esysContext, ESYS_TR handle, TPM2B_NAME **name);
TSS2_RC Esys_TRSess_SetAttributes(ESYS_CONTEXT *esysContext, ESYS_TR session, TPMA_SESSION flags, TPMA_SESSION mask);

/* ---- sessions and policy ---- */
TSS2_RC Esys_StartAuthSession(ESYS_CONTEXT *esysContext, ESYS_TR tpmKey, ESYS_TR bind, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_NONCE *nonceCaller, TPM2_SE sessionType, const TPMT_SYM_DEF *symmetric, TPMI_ALG_HASH authHash, ESYS_TR *sessionHandle);
TSS2_RC Esys_PolicyCommandCode(ESYS_CONTEXT *esysContext, ESYS_TR policySession, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, TPM2_CC code);
TSS2_RC Esys_PolicyAuthValue(ESYS_CONTEXT *esysContext, ESYS_TR policySession, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3);
TSS2_RC Esys_PolicyNvWritten(ESYS_CONTEXT *esysContext, ESYS_TR policySession, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, TPMI_YES_NO writtenSet);
TSS2_RC Esys_PolicyGetDigest(ESYS_CONTEXT *esysContext, ESYS_TR policySession, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, TPM2B_DIGEST **policyDigest);
TSS2_RC Esys_FlushContext(ESYS_CONTEXT *esysContext, ESYS_TR flushHandle);

/* ---- objects (the master key; the storage primary is made through SAPI below) ---- */
TSS2_RC Esys_Create(ESYS_CONTEXT *esysContext, ESYS_TR parentHandle, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_SENSITIVE_CREATE *inSensitive, const TPM2B_PUBLIC *inPublic, const TPM2B_DATA *outsideInfo, const TPML_PCR_SELECTION *creationPCR, TPM2B_PRIVATE **outPrivate, TPM2B_PUBLIC **outPublic, TPM2B_CREATION_DATA **creationData, TPM2B_DIGEST **creationHash, TPMT_TK_CREATION **creationTicket);
TSS2_RC Esys_Load(ESYS_CONTEXT *esysContext, ESYS_TR parentHandle, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_PRIVATE *inPrivate, const TPM2B_PUBLIC *inPublic, ESYS_TR *objectHandle);
TSS2_RC Esys_EvictControl(ESYS_CONTEXT *esysContext, ESYS_TR auth, ESYS_TR objectHandle, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, TPMI_DH_PERSISTENT persistentHandle, ESYS_TR *newObjectHandle);
TSS2_RC Esys_HMAC(ESYS_CONTEXT *esysContext, ESYS_TR handle, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_MAX_BUFFER *buffer, TPMI_ALG_HASH hashAlg, TPM2B_DIGEST **outHMAC);
TSS2_RC Esys_ReadPublic(ESYS_CONTEXT *esysContext, ESYS_TR objectHandle, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, TPM2B_PUBLIC **outPublic, TPM2B_NAME **name, TPM2B_NAME **qualifiedName);
TSS2_RC Esys_HierarchyChangeAuth(ESYS_CONTEXT *esysContext, ESYS_TR authHandle, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_AUTH *newAuth);
TSS2_RC Esys_GetCapability(ESYS_CONTEXT *esysContext, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, TPM2_CAP capability, UINT32 property, UINT32 propertyCount, TPMI_YES_NO *moreData, TPMS_CAPABILITY_DATA **capabilityData);

/* ---- NV ---- */
TSS2_RC Esys_NV_DefineSpace(ESYS_CONTEXT *esysContext, ESYS_TR authHandle, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_AUTH *auth, const TPM2B_NV_PUBLIC *publicInfo, ESYS_TR *nvHandle);
TSS2_RC Esys_NV_UndefineSpace(ESYS_CONTEXT *esysContext, ESYS_TR authHandle, ESYS_TR nvIndex, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3);
TSS2_RC Esys_NV_Write(ESYS_CONTEXT *esysContext, ESYS_TR authHandle, ESYS_TR nvIndex, ESYS_TR shandle1, ESYS_TR shandle2, ESYS_TR shandle3, const TPM2B_MAX_NV_BUFFER *data, UINT16 offset);

/* ---- SAPI on ESYS's own SYS context: the login path (tpm/sapi.py, our session crypto),
   the master key's token (HMAC), CreatePrimary of the storage primary and FlushContext
   of a TPM handle (context.py) ---- */
TSS2_RC Esys_GetSysContext(ESYS_CONTEXT *esys_context, TSS2_SYS_CONTEXT **sys_context);
TSS2_RC Tss2_Sys_NV_ReadPublic(TSS2_SYS_CONTEXT *sysContext, TPMI_RH_NV_INDEX nvIndex, TSS2L_SYS_AUTH_COMMAND const *cmdAuthsArray, TPM2B_NV_PUBLIC *nvPublic, TPM2B_NAME *nvName, TSS2L_SYS_AUTH_RESPONSE *rspAuthsArray);
TSS2_RC Tss2_Sys_NV_Read(TSS2_SYS_CONTEXT *sysContext, TPMI_RH_NV_AUTH authHandle, TPMI_RH_NV_INDEX nvIndex, TSS2L_SYS_AUTH_COMMAND const *cmdAuthsArray, UINT16 size, UINT16 offset, TPM2B_MAX_NV_BUFFER *data, TSS2L_SYS_AUTH_RESPONSE *rspAuthsArray);
TSS2_RC Tss2_Sys_CreatePrimary(TSS2_SYS_CONTEXT *sysContext, TPMI_RH_HIERARCHY primaryHandle, TSS2L_SYS_AUTH_COMMAND const *cmdAuthsArray, const TPM2B_SENSITIVE_CREATE *inSensitive, const TPM2B_PUBLIC *inPublic, const TPM2B_DATA *outsideInfo, const TPML_PCR_SELECTION *creationPCR, TPM2_HANDLE *objectHandle, TPM2B_PUBLIC *outPublic, TPM2B_CREATION_DATA *creationData, TPM2B_DIGEST *creationHash, TPMT_TK_CREATION *creationTicket, TPM2B_NAME *name, TSS2L_SYS_AUTH_RESPONSE *rspAuthsArray);
TSS2_RC Tss2_Sys_StartAuthSession(TSS2_SYS_CONTEXT *sysContext, TPMI_DH_OBJECT tpmKey, TPMI_DH_ENTITY bind, TSS2L_SYS_AUTH_COMMAND const *cmdAuthsArray, const TPM2B_NONCE *nonceCaller, const TPM2B_ENCRYPTED_SECRET *encryptedSalt, TPM2_SE sessionType, const TPMT_SYM_DEF *symmetric, TPMI_ALG_HASH authHash, TPMI_SH_AUTH_SESSION *sessionHandle, TPM2B_NONCE *nonceTPM, TSS2L_SYS_AUTH_RESPONSE *rspAuthsArray);
TSS2_RC Tss2_Sys_FlushContext(TSS2_SYS_CONTEXT *sysContext, TPMI_DH_CONTEXT flushHandle);
TSS2_RC Tss2_Sys_ReadPublic(TSS2_SYS_CONTEXT *sysContext, TPMI_DH_OBJECT objectHandle, TSS2L_SYS_AUTH_COMMAND const *cmdAuthsArray, TPM2B_PUBLIC *outPublic, TPM2B_NAME *name, TPM2B_NAME *qualifiedName, TSS2L_SYS_AUTH_RESPONSE *rspAuthsArray);
TSS2_RC Tss2_Sys_HMAC(TSS2_SYS_CONTEXT *sysContext, TPMI_DH_OBJECT handle, TSS2L_SYS_AUTH_COMMAND const *cmdAuthsArray, const TPM2B_MAX_BUFFER *buffer, TPMI_ALG_HASH hashAlg, TPM2B_DIGEST *outHMAC, TSS2L_SYS_AUTH_RESPONSE *rspAuthsArray);

/* ---- our P-256 ECDH half (see P256_ECDH_SOURCE) ---- */
int pinutil_p256_ecdh(const unsigned char *px, const unsigned char *py, unsigned char *qx, unsigned char *qy, unsigned char *zx);
"""
)

if __name__ == "__main__":
    # Build next to the package (pinutil/tpm/_tss.*.so) so the source tree is runnable.
    ffi.compile(tmpdir=os.path.dirname(os.path.dirname(HERE)), verbose=False)
