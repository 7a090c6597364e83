/* log: the supervisor's and CLI's diagnostics on stderr. When stderr is the
 * journal (JOURNAL_STREAM matches), lines carry sd-daemon "<N>" priority
 * prefixes so journald files them at the right level. */
#pragma once

#include <syslog.h>

void log_setup(const char *ident);
void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
