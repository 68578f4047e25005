/*
 * Logging: one line per event to stderr, with level, time and worker id.
 * Thread-safe (one write(2) per line). Query strings never reach the log:
 * callers log paths, not targets.
 */
#ifndef MS_CORE_LOG_H
#define MS_CORE_LOG_H

enum { MS_LOG_ERROR = 0, MS_LOG_WARN, MS_LOG_INFO, MS_LOG_DEBUG };

extern int ms_log_level;

void ms_log_write(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define ms_log(level, ...)                                                    \
	do {                                                                  \
		if ((level) <= ms_log_level)                                  \
			ms_log_write((level), __VA_ARGS__);                   \
	} while (0)
#define ms_err(...) ms_log(MS_LOG_ERROR, __VA_ARGS__)
#define ms_warn(...) ms_log(MS_LOG_WARN, __VA_ARGS__)
#define ms_info(...) ms_log(MS_LOG_INFO, __VA_ARGS__)
#define ms_debug(...) ms_log(MS_LOG_DEBUG, __VA_ARGS__)

/* Name of the calling thread for log lines ("main", "w0", ...). */
void ms_log_set_thread(const char *name);

#endif
