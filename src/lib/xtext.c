/*
 * xtext: RFC 3461 §4 encoding of envelope fields (xtext.h).
 */
#include <stdbool.h>
#include <stddef.h>

#include "sdps/xtext.h"

static bool
xtext_plain(unsigned char c)
{
	return c >= '!' && c <= '~' && c != '+' && c != '=';
}

static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

size_t
xtext_len(const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 n = 0;

	for (; *p != '\0'; p++)
		n += xtext_plain(*p) ? 1 : 3;
	return n;
}

int
xtext_encode(const char *s, char *buf, size_t len)
{
	static const char	 hex[] = "0123456789ABCDEF";
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 o = 0;

	if (len == 0)
		return -1;
	for (; *p != '\0'; p++) {
		if (xtext_plain(*p)) {
			if (o + 1 >= len)
				goto full;
			buf[o++] = (char)*p;
			continue;
		}
		if (o + 3 >= len)
			goto full;
		buf[o++] = '+';
		buf[o++] = hex[*p >> 4];
		buf[o++] = hex[*p & 0xf];
	}
	buf[o] = '\0';
	return 0;
full:
	buf[0] = '\0';
	return -1;
}

int
xtext_decode(char *s)
{
	unsigned char	*r = (unsigned char *)s, *w = r;
	int		 hi, lo;

	for (; *r != '\0'; r++) {
		if (*r == '+') {
			if ((hi = hexval(r[1])) == -1 ||
			    (lo = hexval(r[2])) == -1 || (hi | lo) == 0)
				return -1;
			*w++ = (unsigned char)(hi << 4 | lo);
			r += 2;
		} else if (xtext_plain(*r))
			*w++ = *r;
		else
			return -1;
	}
	*w = '\0';
	return 0;
}
