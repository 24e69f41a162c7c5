/*
 * Floating point helpers that must behave exactly like redis-server's.
 *
 * Redis parses floats with strtod/strtold and prints them with printf. Rust has no
 * `long double` (x87 80-bit) type, so INCRBYFLOAT and HINCRBYFLOAT, which Redis
 * computes in long double and prints with "%.17Lf", are done here. Everything else
 * about these commands (types, errors, persistence) lives in Rust.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* strtod on a NUL-terminated string. `consumed` receives how many bytes were
 * parsed and `erange` whether errno was ERANGE, so each caller can apply the
 * rules of the Redis function it mirrors. */
double minikv_strtod(const char *s, size_t *consumed, int *erange) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    *erange = (errno == ERANGE);
    *consumed = (size_t)(end - s);
    return v;
}

/* "%.17g", the format of Redis 7.0's addReplyDouble. Returns the length. */
int minikv_format_g17(double v, char *buf, size_t cap) {
    return snprintf(buf, cap, "%.17g", v);
}

/* Redis's string2ld: strtold with no leading space, all bytes consumed, no
 * overflow/underflow to inf/0 and no NaN. */
static int parse_ld(const char *s, size_t len, long double *out) {
    char buf[5 * 1024];
    if (len == 0 || len >= sizeof(buf)) return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (buf[0] == ' ' || buf[0] == '\t' || buf[0] == '\n' || buf[0] == '\r' ||
        buf[0] == '\v' || buf[0] == '\f')
        return 0;
    char *end = NULL;
    errno = 0;
    long double v = strtold(buf, &end);
    if ((size_t)(end - buf) != len) return 0;
    if (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || fpclassify(v) == FP_ZERO))
        return 0;
    if (isnan(v)) return 0;
    *out = v;
    return 1;
}

/*
 * base + incr in long double, printed like Redis's ld2string(LD_STR_HUMAN):
 * "%.17Lf" with trailing zeros (and a trailing '.') removed, "-0" printed as "0".
 * `base` may be NULL for a missing key (0). Returns the length written, or
 *   -1 if base is not a valid float, -2 if incr is not a valid float,
 *   -3 if the result is NaN or infinite, -4 if `out` is too small.
 */
long minikv_ld_incr(const char *base, size_t base_len, const char *incr, size_t incr_len,
                    char *out, size_t cap) {
    long double b = 0, i = 0;
    if (base != NULL && !parse_ld(base, base_len, &b)) return -1;
    if (!parse_ld(incr, incr_len, &i)) return -2;
    long double sum = b + i;
    if (isnan(sum) || isinf(sum)) return -3;
    int n = snprintf(out, cap, "%.17Lf", sum);
    if (n < 0 || (size_t)n + 1 > cap) return -4;
    size_t l = (size_t)n;
    if (strchr(out, '.') != NULL) {
        char *p = out + l - 1;
        while (*p == '0') { p--; l--; }
        if (*p == '.') l--;
    }
    if (l == 2 && out[0] == '-' && out[1] == '0') { out[0] = '0'; l = 1; }
    out[l] = '\0';
    return (long)l;
}
