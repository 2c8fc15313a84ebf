/* collectives/coll_util.c: the module's error buffer, its clock and its data type names. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "collectives/coll_internal.h"

int coll_errf(coll_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

double coll_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *coll_dtype_name(coll_dtype dt)
{
    return dt == COLL_BF16 ? "bf16" : dt == COLL_I32 ? "int32" : "float32";
}
