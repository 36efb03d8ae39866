/*
 * vsock: a tiny AF_VSOCK tool for Ferrovisor's Linux test guest (busybox has
 * no vsock support). Built static by scripts/build-test-guest into /bin/vsock.
 *
 *   vsock listen PORT        accept one connection on PORT, echo everything
 *                            back until the peer ends its side, then exit
 *   vsock connect CID PORT   connect to CID:PORT, copy standard input to the
 *                            socket and the socket to standard output; at
 *                            the end of standard input, shut the sending side
 *                            and keep reading until the peer ends
 *
 * Exit status: 0 on a clean end, 1 on an error (reported on stderr).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int fail(const char *what)
{
	fprintf(stderr, "vsock: %s: %s\n", what, strerror(errno));
	return 1;
}

static int parse_u32(const char *s, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v > 0xffffffffUL)
		return -1;
	*out = (unsigned int)v;
	return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int do_listen(unsigned int port)
{
	struct sockaddr_vm addr;
	char buf[4096];
	int s, c;

	s = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (s < 0)
		return fail("socket");
	memset(&addr, 0, sizeof(addr));
	addr.svm_family = AF_VSOCK;
	addr.svm_cid = VMADDR_CID_ANY;
	addr.svm_port = port;
	if (bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return fail("bind");
	if (listen(s, 1) < 0)
		return fail("listen");
	c = accept(s, NULL, NULL);
	if (c < 0)
		return fail("accept");
	close(s);
	for (;;) {
		ssize_t n = read(c, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail("read");
		}
		if (n == 0)
			break;
		if (write_all(c, buf, (size_t)n) < 0)
			return fail("write");
	}
	close(c);
	return 0;
}

static int do_connect(unsigned int cid, unsigned int port)
{
	struct sockaddr_vm addr;
	struct pollfd fds[2];
	char buf[4096];
	int s, stdin_open = 1;

	s = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (s < 0)
		return fail("socket");
	memset(&addr, 0, sizeof(addr));
	addr.svm_family = AF_VSOCK;
	addr.svm_cid = cid;
	addr.svm_port = port;
	if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return fail("connect");
	for (;;) {
		int nfds = 0;

		fds[nfds].fd = s;
		fds[nfds].events = POLLIN;
		nfds++;
		if (stdin_open) {
			fds[nfds].fd = 0;
			fds[nfds].events = POLLIN;
			nfds++;
		}
		if (poll(fds, nfds, -1) < 0) {
			if (errno == EINTR)
				continue;
			return fail("poll");
		}
		if (stdin_open && fds[1].revents) {
			ssize_t n = read(0, buf, sizeof(buf));
			if (n < 0 && errno != EINTR)
				return fail("read stdin");
			if (n == 0) {
				stdin_open = 0;
				shutdown(s, SHUT_WR);
			} else if (n > 0 && write_all(s, buf, (size_t)n) < 0) {
				return fail("write socket");
			}
		}
		if (fds[0].revents) {
			ssize_t n = read(s, buf, sizeof(buf));
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return fail("read socket");
			}
			if (n == 0)
				break;
			if (write_all(1, buf, (size_t)n) < 0)
				return fail("write stdout");
		}
	}
	close(s);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned int cid, port;

	if (argc == 3 && strcmp(argv[1], "listen") == 0 && parse_u32(argv[2], &port) == 0)
		return do_listen(port);
	if (argc == 4 && strcmp(argv[1], "connect") == 0 && parse_u32(argv[2], &cid) == 0 &&
	    parse_u32(argv[3], &port) == 0)
		return do_connect(cid, port);
	fprintf(stderr, "usage: vsock listen PORT | vsock connect CID PORT\n");
	return 2;
}
