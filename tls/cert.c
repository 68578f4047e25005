/*
 * Server certificate set-up: either load the operator's PEM chain and key,
 * or mint a throw-away self-signed ECDSA P-256 certificate so that the
 * development default (no --cert/--key) just works. The self-signed
 * certificate is an end-entity certificate (CA:FALSE, serverAuth) naming
 * localhost, 127.0.0.1 and ::1; clients that pin it as their only trust
 * anchor accept it, since a trust anchor is not itself checked for CA use.
 * It deliberately has no keyUsage extension: with keyUsage, OpenSSL-family
 * verifiers insist on keyCertSign before they treat a certificate as its own
 * issuer, and keyCertSign without CA:TRUE is invalid (RFC 5280 4.2.1.3);
 * CA:TRUE in turn makes webpki (rustls) reject it as an end entity.
 */
#include "tls/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

void ms_tls__err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	int k;
	uint32_t e = ERR_get_error();

	if (!err || !errlen)
		goto out;
	va_start(ap, fmt);
	k = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (e && k >= 0 && (size_t)k + 2 < errlen) {
		char buf[160];

		ERR_error_string_n(e, buf, sizeof(buf));
		snprintf(err + k, errlen - (size_t)k, ": %s", buf);
	}
out:
	ERR_clear_error();
}

static int add_san(X509 *x)
{
	static const uint8_t ip4[4] = {127, 0, 0, 1};
	static const uint8_t ip6[16] = {[15] = 1};
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *g;
	ASN1_STRING *s;
	int ok = 0;

	if (!gens)
		return 0;
	for (int i = 0; i < 3; i++) {
		g = GENERAL_NAME_new();
		s = i == 0 ? ASN1_IA5STRING_new() : ASN1_OCTET_STRING_new();
		if (!g || !s)
			goto fail_one;
		if (i == 0 && !ASN1_STRING_set(s, "localhost", 9))
			goto fail_one;
		if (i == 1 && !ASN1_OCTET_STRING_set(s, ip4, sizeof(ip4)))
			goto fail_one;
		if (i == 2 && !ASN1_OCTET_STRING_set(s, ip6, sizeof(ip6)))
			goto fail_one;
		GENERAL_NAME_set0_value(g, i == 0 ? GEN_DNS : GEN_IPADD, s);
		s = NULL;
		if (!sk_GENERAL_NAME_push(gens, g))
			goto fail_one;
		continue;
	fail_one:
		ASN1_STRING_free(s);
		GENERAL_NAME_free(g);
		goto out;
	}
	ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT);
out:
	GENERAL_NAMES_free(gens);
	return ok;
}

static int add_usage(X509 *x)
{
	BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
	EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
	int ok = 0;

	if (!bc || !eku)
		goto out;
	bc->ca = 0;
	if (!X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT))
		goto out;
	if (!sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) ||
	    !X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT))
		goto out;
	ok = 1;
out:
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
	BASIC_CONSTRAINTS_free(bc);
	return ok;
}

int ms_tls__cert_selfsigned(SSL_CTX *sc, char *err, size_t errlen)
{
	EVP_PKEY *pk = EVP_PKEY_new();
	EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	X509 *x = X509_new();
	BIGNUM *bn = NULL;
	ASN1_INTEGER *serial = NULL;
	X509_NAME *name;
	uint8_t rnd[16];
	int rc = -EINVAL;

	if (!pk || !ec || !x || !EC_KEY_generate_key(ec) || !EVP_PKEY_assign_EC_KEY(pk, ec)) {
		ms_tls__err(err, errlen, "tls: generating the P-256 key failed");
		goto out;
	}
	ec = NULL; /* owned by pk now */

	/* A positive 127-bit serial with a non-zero top byte (RFC 5280 4.1.2.2). */
	RAND_bytes(rnd, sizeof(rnd));
	rnd[0] = (uint8_t)((rnd[0] & 0x7f) | 0x40);
	bn = BN_bin2bn(rnd, sizeof(rnd), NULL);
	serial = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
	name = X509_get_subject_name(x);
	if (!serial || !X509_set_version(x, X509_VERSION_3) ||
	    !X509_set_serialNumber(x, serial) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600) ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
					(const uint8_t *)"mezon-sock self-signed", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					(const uint8_t *)"localhost", -1, -1, 0) ||
	    !X509_set_issuer_name(x, name) || !X509_set_pubkey(x, pk) || !add_usage(x) ||
	    !add_san(x) || !X509_sign(x, pk, EVP_sha256())) {
		ms_tls__err(err, errlen, "tls: building the self-signed certificate failed");
		goto out;
	}
	if (!SSL_CTX_use_certificate(sc, x) || !SSL_CTX_use_PrivateKey(sc, pk)) {
		ms_tls__err(err, errlen, "tls: installing the self-signed certificate failed");
		goto out;
	}
	rc = 0;
out:
	ASN1_INTEGER_free(serial);
	BN_free(bn);
	X509_free(x);
	EC_KEY_free(ec);
	EVP_PKEY_free(pk);
	return rc;
}

int ms_tls__cert_load(SSL_CTX *sc, const char *cert_file, const char *key_file,
		      char *err, size_t errlen)
{
	EVP_PKEY *pk;
	FILE *f;
	int rc = 0;

	if (!cert_file || !key_file) {
		ms_tls__err(err, errlen, "tls: --cert and --key go together");
		return -EINVAL;
	}
	/* Report a missing or unreadable file as such rather than as a PEM
	 * parse error. */
	if (access(cert_file, R_OK) < 0 || access(key_file, R_OK) < 0) {
		int e = errno;
		const char *bad = access(cert_file, R_OK) < 0 ? cert_file : key_file;

		ms_tls__err(err, errlen, "tls: %s: %s", bad, strerror(e));
		return -e;
	}
	if (!SSL_CTX_use_certificate_chain_file(sc, cert_file)) {
		ms_tls__err(err, errlen, "tls: %s: no usable PEM certificate chain", cert_file);
		return -EINVAL;
	}
	f = fopen(key_file, "r");
	pk = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	if (!pk) {
		ms_tls__err(err, errlen, "tls: %s: no usable PEM private key", key_file);
		return -EINVAL;
	}
	/* Check the pair ourselves so the message says what is wrong. */
	if (!X509_check_private_key(SSL_CTX_get0_certificate(sc), pk) ||
	    !SSL_CTX_use_PrivateKey(sc, pk) || !SSL_CTX_check_private_key(sc)) {
		ms_tls__err(err, errlen, "tls: %s does not match the certificate in %s",
			    key_file, cert_file);
		rc = -EINVAL;
	}
	EVP_PKEY_free(pk);
	return rc;
}

void ms_tls__cert_fingerprint(SSL_CTX *sc, char *fp)
{
	static const char hex[] = "0123456789ABCDEF";
	X509 *x = SSL_CTX_get0_certificate(sc);
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	char *p = fp;

	if (!x || !X509_digest(x, EVP_sha256(), md, &len))
		len = 0;
	for (unsigned i = 0; i < len; i++) {
		if (i)
			*p++ = ':';
		*p++ = hex[md[i] >> 4];
		*p++ = hex[md[i] & 15];
	}
	*p = '\0';
}
