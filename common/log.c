/* common/log.c: one line per message on stderr, "2026-11-23T14:00:00Z atomd[pid] LEVEL msg".
 * Each line is formatted whole and written with one call, so the lines of several threads (or of
 * several ranks sharing a terminal) never interleave mid-line. */
#include "common/common.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char log_program[64] = "atom";
static atom_log_level log_min = ATOM_LOG_INFO;

void atom_log_init(const char *program, atom_log_level min_level)
{
    snprintf(log_program, sizeof log_program, "%s", program ? program : "atom");
    log_min = min_level;
}

void atom_log(atom_log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < log_min)
        return;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char line[2048];
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, "%s[%ld] %s ", log_program, (long)getpid(),
                  names[level < 0 || level > ATOM_LOG_ERROR ? ATOM_LOG_ERROR : level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    if (len == sizeof line - 1)
        len--; /* truncated: keep room for the newline */
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}
