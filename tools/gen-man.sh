#!/bin/sh
# Write mezon-sock(1) in roff to stdout, from the server's own --help and
# --version, so the man page lists exactly the flags and defaults of the
# binary it ships with. Usage: gen-man.sh path/to/mezon-sock
set -eu
bin=$1
version=$("$bin" --version)
help=$("$bin" --help)

cat <<ROFF
.TH MEZON-SOCK 1 "" "$version" "User Commands"
.SH NAME
mezon-sock \- WebSocket chat server (io_uring, one pinned worker thread per core)
.SH SYNOPSIS
.B mezon-sock
[\fB\-\-config\fR \fIFILE\fR] [\fIflags\fR]
.SH DESCRIPTION
.B mezon-sock
serves WebSocket chat over ws:// and wss:// with one io_uring worker thread
per CPU, each pinned to its CPU and allocating from its NUMA node.
Flags may also be given in a configuration file (\fB\-\-config\fR): one
\fIkey\fR = \fIvalue\fR per line, the keys being the long flags without
\fB\-\-\fR, \fB#\fR starting a comment line; a boolean key alone means true.
Flags on the command line win over the file, whatever their order.
\fB\-\-print\-config\fR prints the configuration in effect as such a file.
.PP
SIGTERM or SIGINT starts a graceful drain of up to \fB\-\-drain\-timeout\fR
seconds; a second signal exits at once.
.SH OPTIONS
Defaults are in brackets, integer ranges in parentheses.
ROFF

# "  --name ARG   help" -> .TP / .B --name ARG / help
printf '%s\n' "$help" | sed -n -E '
	/^  --/!d
	s/\\/\\e/g
	s/^  (--[a-z-]+)(( [A-Z:]+)|( [a-z]+(\|[a-z]+)+))? +(.*)$/.TP\n\\fB\1\\fR\\fI\2\\fR\n\6/
	p
' | sed -E '/^\\fB/ s/-/\\-/g'

cat <<ROFF
.SH EXIT STATUS
0 on a clean shutdown (and after \fB\-\-help\fR, \fB\-\-version\fR,
\fB\-\-print\-config\fR); 2 on a bad flag, value, configuration file line or
NUMA node (one line on standard error names the flag, or the file, line and
key, and what is accepted); 1 when a worker fails to start.
.SH FILES
.TP
.I /etc/mezon-sock/mezon-sock.conf
configuration read by the systemd unit \fBmezon-sock@.service\fR (one
instance per NUMA node: \fBmezon-sock@0\fR, \fBmezon-sock@1\fR, ...).
An example with every key at its default is
.IR /usr/share/doc/mezon-sock/mezon-sock.conf.example .
.SH SEE ALSO
.BR systemd.exec (5)
ROFF
