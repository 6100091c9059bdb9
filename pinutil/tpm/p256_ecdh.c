/* p256_ecdh.c: our half of an ECDH salt (TPM 2.0 Part 1, Annex C.6.1) on NIST P-256.
 * Compiled into pinutil.tpm._tss by binding_build.py. The ephemeral scalar is drawn and
 * wiped here, so it never reaches Python. OpenSSL's EC_POINT API does no provider fetch:
 * no per-call library context, no config file, no DRBG. */
#include <sys/random.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>

/* From the TPM key's point (px, py), 32-byte big-endian coordinates: our ephemeral
 * public point (qx, qy) and the shared x-coordinate zx. 1 on success; 0 on any
 * failure, including a point that is not on the curve. */
static int pinutil_p256_ecdh(const unsigned char *px, const unsigned char *py,
                             unsigned char *qx, unsigned char *qy, unsigned char *zx)
{
    int ok = 0;
    unsigned char scalar[32];
    EC_GROUP *group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    BN_CTX *bn = BN_CTX_new();
    BIGNUM *d = BN_secure_new(), *x = BN_new(), *y = BN_new();
    EC_POINT *peer = NULL, *ours = NULL, *shared = NULL;

    if (!group || !bn || !d || !x || !y)
        goto done;
    peer = EC_POINT_new(group);
    ours = EC_POINT_new(group);
    shared = EC_POINT_new(group);
    if (!peer || !ours || !shared)
        goto done;
    /* Rejection sampling: a uniform scalar in [1, n-1]. */
    do {
        size_t got = 0;
        while (got < sizeof scalar) {
            ssize_t n = getrandom(scalar + got, sizeof scalar - got, 0);
            if (n < 0)
                goto done;
            got += (size_t)n;
        }
        if (!BN_bin2bn(scalar, sizeof scalar, d))
            goto done;
    } while (BN_is_zero(d) || BN_cmp(d, EC_GROUP_get0_order(group)) >= 0);
    BN_set_flags(d, BN_FLG_CONSTTIME);
    if (!BN_bin2bn(px, 32, x) || !BN_bin2bn(py, 32, y)
        || !EC_POINT_set_affine_coordinates(group, peer, x, y, bn)  /* checks the curve */
        || !EC_POINT_mul(group, ours, d, NULL, NULL, bn)
        || !EC_POINT_mul(group, shared, NULL, peer, d, bn)
        || EC_POINT_is_at_infinity(group, shared)
        || !EC_POINT_get_affine_coordinates(group, ours, x, y, bn)
        || BN_bn2binpad(x, qx, 32) != 32 || BN_bn2binpad(y, qy, 32) != 32
        || !EC_POINT_get_affine_coordinates(group, shared, x, NULL, bn)
        || BN_bn2binpad(x, zx, 32) != 32)
        goto done;
    ok = 1;
done:
    OPENSSL_cleanse(scalar, sizeof scalar);
    BN_clear_free(d);
    BN_clear_free(x);
    BN_free(y);
    EC_POINT_free(peer);
    EC_POINT_free(ours);
    EC_POINT_clear_free(shared);
    BN_CTX_free(bn);
    EC_GROUP_free(group);
    return ok;
}
