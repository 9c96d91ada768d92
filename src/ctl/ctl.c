/* ctl: output helpers shared by the sdps-ctl verbs. */

#include <stdarg.h>
#include <stdio.h>

#include "sdps/ctl.h"

/*
 * Length of the valid UTF-8 sequence at s, or 0 if it is not one
 * (overlong forms, surrogates and code points past U+10FFFF included).
 */
static int
utf8_len(const unsigned char *s)
{
	int	 len, i;
	unsigned int cp;

	if (s[0] < 0xc2 || s[0] > 0xf4)
		return 0;
	len = s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;
	cp = s[0] & (0x7f >> len);
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/*
 * JSON must be valid UTF-8, but what we print (a message, an envelope
 * from an old spool) need not be: an invalid octet becomes U+FFFD rather
 * than making the whole document unreadable.
 */
void
ctl_json_str(FILE *f, const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	int			 len;

	putc('"', f);
	while (*p != '\0') {
		switch (*p) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f) {
				fprintf(f, "\\u%04x", *p);
			} else if (*p < 0x80) {
				putc(*p, f);
			} else if ((len = utf8_len(p)) > 0) {
				fwrite(p, 1, (size_t)len, f);
				p += len;
				continue;
			} else {
				fputs("\\ufffd", f);
			}
			break;
		}
		p++;
	}
	putc('"', f);
}

int
ctl_fail(const char *fmt, ...)
{
	va_list	 ap;

	fputs("sdps-ctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}
