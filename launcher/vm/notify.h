/* notify: the sd_notify protocol (a datagram to $NOTIFY_SOCKET), written
 * here because it is a dozen lines and vrt runs where libsystemd is not. */
#pragma once

/* Sends state (e.g. "READY=1\nSTATUS=running") when NOTIFY_SOCKET is set.
 * Returns 1 when sent, 0 when there is no socket, or a negative errno. */
int notify_send(const char *state);
